"""Volume checks judge tonight against the object's own history: a tenth of the usual is caught,
a weekly rhythm is not, and too little history judges nothing."""

from __future__ import annotations

import random

from hospitaldb.engine.checks.volume import Night, VolumeRule, judge

BILLING = VolumeRule("staging.billing", "new_rows", "warn")
REFUSING = VolumeRule("staging.billing", "new_rows", "error")
# A hospital's week: Monday to Friday busy, Saturday lighter, Sunday quiet (ISO weekdays).
USUAL = {1: 10_000, 2: 10_000, 3: 9_800, 4: 10_200, 5: 9_900, 6: 6_000, 7: 3_500}


def nights(count: int, rhythm: dict[int, int] = USUAL, seed: int = 7) -> list[tuple[int, int]]:
    """(weekday, new rows) for count nights ending on a Monday night, oldest first, ±4% noise."""
    noise = random.Random(seed)
    first = (1 - count) % 7 + 1  # so that the last night is a Monday (weekday 1)
    days = [((first - 1 + offset) % 7) + 1 for offset in range(count)]
    return [(day, round(rhythm[day] * noise.uniform(0.96, 1.04))) for day in days]


def history_before(seen: list[tuple[int, int]]) -> list[Night]:
    """What the audit trail returns: newest first, the last eight weeks flagged as such."""
    return [Night(value, day, index < 56) for index, (day, value) in enumerate(reversed(seen))]


def test_eight_weeks_of_a_normal_weekly_rhythm_raise_nothing():
    seen: list[tuple[int, int]] = []
    for day, value in nights(8 * 7):
        result = judge(BILLING, value, day, history_before(seen))
        assert result.outcome == "passed", result.detail
        seen.append((day, value))


def test_a_tenth_of_the_usual_is_warned_or_refused_with_the_reason_in_words():
    seen = nights(30)
    tonight_day = 2  # Tuesday, the night after the last one on record
    warned = judge(BILLING, 1_000, tonight_day, history_before(seen))
    assert warned.outcome == "warned"
    assert warned.detail.startswith("staging.billing: 1,000 new rows, usual ")
    assert warned.detail.endswith(" on Tuesdays (last 4)")
    assert judge(REFUSING, 1_000, tonight_day, history_before(seen)).outcome == "failed"
    assert judge(REFUSING, 10_100, tonight_day, history_before(seen)).outcome == "passed"
    assert judge(REFUSING, 31_000, tonight_day, history_before(seen)).outcome == "failed", "a tripling too"


def test_before_four_of_a_weekday_the_whole_history_holds_every_weekday_level():
    seen = nights(14)  # two of each weekday
    usual_sunday = judge(BILLING, 3_400, 7, history_before(seen))
    assert usual_sunday.outcome == "passed"
    assert usual_sunday.detail.endswith("(last 14 runs)")
    assert judge(BILLING, 300, 2, history_before(seen)).outcome == "warned"


def test_too_little_history_judges_nothing_and_says_so():
    result = judge(BILLING, 5, 2, history_before(nights(9)))
    assert result.outcome == "passed"
    assert result.detail == "staging.billing: 5 new rows; not judged yet: 9 of 10 runs on record"


def test_a_table_that_shrinks_every_night_is_judged_on_the_right_side():
    shrinking = [Night(-1_000 + offset, (offset % 7) + 1, True) for offset in range(12)]
    rule = VolumeRule("staging.archive", "new_rows", "error", min_history=10)
    assert judge(rule, -1_005, 3, shrinking[:3]).outcome == "passed"
    assert judge(rule, -990, 6, shrinking).outcome == "passed"
    assert judge(rule, -5_000, 6, shrinking).outcome == "failed"
