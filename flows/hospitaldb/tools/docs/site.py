"""Everything the documentation site needs ships with it: a page view asks no third party for anything.

Hospitals read these pages on networks without internet, and a page view must not tell another
host who reads them. So:

- Mermaid, which draws the diagrams, is the npm registry's `mermaid` package, pinned by version
  and checksum, fetched once at build time (into build/docs-assets/, from `npm_config_registry`
  when set) and served by the site itself as javascripts/mermaid.min.js; so is the
  ResizeObserver polyfill that Material loads for old browsers;
- Material's own fallbacks, which would load either from unpkg, point at those copies;
- the fonts are the reader's own (mkdocs.yml: `font: false`), not Google Fonts.

docs/hooks.py calls these as MkDocs builds the site; tests/test_docs_site.py opens the built site in
headless Chromium with every request leaving loopback refused, and sees the diagrams drawn.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hospitaldb.paths import PROJECT_ROOT

ASSETS = PROJECT_ROOT / "build" / "docs-assets"


@dataclass(frozen=True)
class NpmAsset:
    """One file of an npm package, pinned, that the site serves instead of a CDN's copy."""

    package: str
    version: str
    integrity: str  # the registry's sha512 of the package's tarball
    member: str  # the file, inside the tarball
    in_site: str  # where the site serves it
    fallback: str  # the CDN address Material's bundle would load it from, where the page has none

    @property
    def cached(self) -> Path:
        return ASSETS / f"{self.package}-{self.version}-{Path(self.member).name}"


MERMAID = NpmAsset(
    "mermaid",
    "11.17.2",  # the major Material for MkDocs 9 draws with
    "sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg==",
    "package/dist/mermaid.min.js",
    "javascripts/mermaid.min.js",
    "https://unpkg.com/mermaid@11/dist/mermaid.min.js",
)
# For browsers without ResizeObserver: Material loads it from unpkg on those alone.
RESIZE_OBSERVER = NpmAsset(
    "resize-observer-polyfill",
    "1.5.1",
    "sha512-LwZrotdHOo12nQuZlHEmtuXdqGoOD0OhaxopaNFxWzInpEgaLWoVuAMbTzixuosCx2nEG58ngzW3vxdWoxIgdg==",
    "package/dist/ResizeObserver.js",
    "javascripts/ResizeObserver.js",
    "https://unpkg.com/resize-observer-polyfill",
)
SHIPPED = (MERMAID, RESIZE_OBSERVER)
# Mermaid is on every page (extra_javascript): the bundle's fallback for it is never used, but
# points at the site's copy all the same. The polyfill is loaded only where a browser lacks
# ResizeObserver: from the site, relative to the bundle's own address.
BUNDLE_SCRIPT = "document.querySelector('script[src*=\"assets/javascripts/bundle.\"]').src"
INSTEAD = {
    MERMAID: "document.querySelector('script[src$=\"mermaid.min.js\"]').src",
    RESIZE_OBSERVER: f'new URL("../../{RESIZE_OBSERVER.in_site}", {BUNDLE_SCRIPT}).href',
}


class AssetUnavailable(RuntimeError):
    """An asset could not be fetched or did not match its checksum."""


def fetched(asset: NpmAsset) -> Path:
    """The asset's file, fetched from the npm registry once (checked against its checksum) and kept."""
    if asset.cached.exists():
        return asset.cached
    registry = os.environ.get("npm_config_registry") or "https://registry.npmjs.org/"
    url = f"{registry.rstrip('/')}/{asset.package}/-/{asset.package}-{asset.version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            tarball = response.read()
    except OSError as error:
        raise AssetUnavailable(
            f"could not fetch {asset.package} {asset.version} from {url} ({error}): the site serves it "
            f"itself. Set npm_config_registry to a registry you reach, or put the file at {asset.cached}"
        ) from None
    found = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if found != asset.integrity:
        raise AssetUnavailable(
            f"{url} is not {asset.package} {asset.version} as published (checksum {found})"
        )
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        member = archive.extractfile(asset.member)
        if member is None:
            raise AssetUnavailable(f"{url} holds no {asset.member}")
        content = member.read()
    ASSETS.mkdir(parents=True, exist_ok=True)
    partial = asset.cached.with_suffix(".part")
    partial.write_bytes(content)
    partial.rename(asset.cached)
    return asset.cached


def without_third_party_fallbacks(site: Path) -> list[Path]:
    """Point Material's CDN fallbacks at the site's own copies, in its bundle and source map."""
    changed = []
    for path in sorted((site / "assets" / "javascripts").glob("bundle.*.min.js*")):
        original = path.read_text(encoding="utf-8")
        text = original
        for asset, instead in INSTEAD.items():
            # In the source map the address sits inside a JSON string: its quotes are escaped.
            text = text.replace(f'"{asset.fallback}"', instead)
            text = text.replace(f'\\"{asset.fallback}\\"', instead.replace('"', '\\"'))
        # and a comment of the map's sources that names the CDN, so that no host but ours is named
        text = text.replace("downloaded from unpkg.com", "loaded from this site")
        if text != original:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
