"""A run parses its SQL once: every step file, check file and view definition at most once per run.

What is parsed is counted at PostgreSQL's parser itself (pglast), in the run's own process, for
a full refresh of the reference warehouse, serial and with parallel views.
"""

from __future__ import annotations

from collections import Counter

import pglast
import pglast.parser
import pytest

from hospitaldb_testing.runs import run_flow

PARSERS = ("parse_sql", "split")


@pytest.fixture
def parsed_texts(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every text handed to the parser from now on, however the code reaches it."""
    texts: Counter[str] = Counter()
    for name in PARSERS:
        original = getattr(pglast.parser, name)

        def counting(text, *args, _original=original, **kwargs):
            texts[text] += 1
            return _original(text, *args, **kwargs)

        monkeypatch.setattr(pglast.parser, name, counting)
        monkeypatch.setattr(pglast, name, counting)
    return texts


@pytest.mark.parametrize("parallel_views", [1, 2])
def test_a_full_refresh_parses_each_file_and_view_definition_at_most_once(
    demo_database, prefect, parsed_texts, parallel_views
):
    state = run_flow(parallel_views=parallel_views)
    assert state.is_completed(), state.message

    parsed_again = {text.strip()[:80]: count for text, count in parsed_texts.items() if count > 1}
    assert not parsed_again, f"parsed more than once in one run: {parsed_again}"
    # 3 step files and their 3 incremental forms, 13 check files and 4 stand-ins of them, capture.sql,
    # the source and volume checks, and the few files that define materialized views (the
    # lineage): each once. Before, a run parsed 152 times.
    assert sum(parsed_texts.values()) <= 30, sum(parsed_texts.values())
