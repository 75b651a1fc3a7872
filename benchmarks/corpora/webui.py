"""``webui``: web-application interface text from the German catalogs of the Weblate and Django wheels.

``weblate/locale/de/LC_MESSAGES/django.po`` and every ``django/**/locale/de/LC_MESSAGES/*.po``. Random
split by seed, grouped by English source text.
"""

from __future__ import annotations

import tempfile
import zipfile
from fnmatch import fnmatch
from pathlib import Path

from benchmarks.corpora.common import clean_and_split, pip_download, sha256_file, write_corpus
from benchmarks.corpora.gettext_catalogs import catalog_pairs

WHEELS = {
    "weblate==5.14.3": ["weblate/locale/de/LC_MESSAGES/django.po"],
    "django==5.2.19": ["django/*locale/de/LC_MESSAGES/*.po"],  # fnmatch's * crosses "/": django/**/locale
}


def build(seed: int = 0) -> dict:
    packages = {}
    with tempfile.TemporaryDirectory() as tmp:
        files: list[tuple[str, Path]] = []
        for requirement, patterns in WHEELS.items():
            wheel = pip_download(requirement)
            with zipfile.ZipFile(wheel) as zf:
                members = sorted(m for m in zf.namelist() if any(fnmatch(m, p) for p in patterns))
                files.extend((m, Path(zf.extract(m, tmp))) for m in members)
            packages[requirement] = {"wheel": wheel.name, "sha256": sha256_file(wheel), "catalogs": len(members)}
        pairs, records = catalog_pairs(files)
    splits, cleaning = clean_and_split(pairs, group_of=lambda p: p.src, seed=seed)
    return write_corpus("webui", splits, sources={"packages": packages, "catalogs": records}, cleaning=cleaning,
                        notes=f"random split by seed {seed}, grouped by English source text")
