"""``sysmsg``: system messages from the German gettext catalogs of a fixed list of Debian packages.

Each package is fetched with ``apt-get download`` into the cache and unpacked with ``dpkg -x``; every
``usr/share/locale/de*/LC_MESSAGES/*.mo`` becomes pairs (see :mod:`mtedge.data.gettext`). Messages are
independent, so the split is random by seed — grouped by source text, so all translations of one English
message land in the same split.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchmarks.corpora.common import DOWNLOADS, clean_and_split, run, sha256_file, write_corpus
from benchmarks.corpora.gettext_catalogs import catalog_pairs

# The package list is fixed; the versions are what Debian 12 (bookworm) served when the recipe was written.
# apt mirrors drop superseded versions, so a pinned one may vanish: the recipe then takes the current one,
# says so, and the manifest records both (the splits' hashes will differ from the README's).
PINNED = {
    "postgresql-15": "15.18-0+deb12u1", "postgresql-client-15": "15.18-0+deb12u1", "git": "1:2.39.5-0+deb12u3",
    "coreutils": "9.1-1", "gnupg-l10n": "2.2.40-1.1+deb12u2", "dpkg": "1.21.23", "libdpkg-perl": "1.21.23",
    "libc-l10n": "2.36-9+deb12u14", "libglib2.0-data": "2.74.6-2+deb12u9", "bash": "5.2.15-2+b13",
    "gettext": "0.21-12", "wget": "1.21.3-1+deb12u1", "procps": "2:4.0.2-3", "login": "1:4.13+dfsg1-1+deb12u2",
    "tar": "1.34+dfsg-1.2+deb12u1", "binutils-common": "2.40-2", "apt": "2.6.1", "make": "4.3-4.1",
    "diffutils": "1:3.8-4", "findutils": "4.9.0-4", "libgtk2.0-common": "2.24.33-2+deb12u1",
    "krb5-locales": "1.20.1-2+deb12u5", "gsettings-desktop-schemas": "43.0-1", "shared-mime-info": "2.2-1",
    "xz-utils": "5.4.1-1+deb12u1",
}
PACKAGES = tuple(PINNED)
DEB_DIR = DOWNLOADS / "debs"
CATALOG_GLOB = "usr/share/locale/de*/LC_MESSAGES/*.mo"


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True,
                          text=True).stdout.strip()


def fetch_debs(packages=PACKAGES, cache: Path = DEB_DIR) -> dict[str, Path]:
    """package -> its .deb in the cache, downloading the ones not there yet (the pinned version if possible)."""
    cache.mkdir(parents=True, exist_ok=True)

    def cached() -> dict[str, Path]:
        found = {}
        for deb in sorted(cache.glob("*.deb")):
            name = _deb_field(deb, "Package")
            if name in packages and (name not in found or _deb_field(deb, "Version") == PINNED[name]):
                found[name] = deb  # several versions cached: the pinned one, else the last in sorted order
        return found

    debs = cached()
    missing = [p for p in packages if p not in debs]
    if missing:
        try:
            run(["apt-get", "download", *(f"{p}={PINNED[p]}" for p in missing)], cwd=cache)
        except subprocess.CalledProcessError:
            for name in missing:  # one at a time, so one vanished version does not stop the rest
                try:
                    run(["apt-get", "download", f"{name}={PINNED[name]}"], cwd=cache)
                except subprocess.CalledProcessError:
                    print(f"warning: {name}={PINNED[name]} is no longer in the archive; taking the current "
                          f"version (the splits will differ from the recorded hashes)", flush=True)
                    run(["apt-get", "download", name], cwd=cache)
        debs = cached()
    still = [p for p in packages if p not in debs]
    if still:
        raise SystemExit(f"apt-get download gave no .deb for: {', '.join(still)}")
    return debs


def build(seed: int = 0) -> dict:
    debs = fetch_debs()
    unpack_root = DOWNLOADS / "debs-unpacked"
    files: list[tuple[str, Path]] = []
    packages = {}
    for name in PACKAGES:
        deb = debs[name]
        target = unpack_root / name
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)  # an earlier run stopped half-way
            partial.mkdir(parents=True)
            run(["dpkg", "-x", str(deb), str(partial)], cwd=DOWNLOADS)
            partial.rename(target)
        catalogs = sorted(str(p.relative_to(target)) for p in target.glob(CATALOG_GLOB))
        files.extend((f"{name}:{rel}", target / rel) for rel in catalogs)
        packages[name] = {"deb": deb.name, "version": _deb_field(deb, "Version"), "pinned_version": PINNED[name],
                          "sha256": sha256_file(deb),
                          "german_catalogs": catalogs or "none: the package ships no German catalog"}
    pairs, records = catalog_pairs(files)
    splits, cleaning = clean_and_split(pairs, group_of=lambda p: p.src, seed=seed)
    sources = {"packages": packages, "catalogs": records, "glob": CATALOG_GLOB}
    return write_corpus("sysmsg", splits, sources=sources, cleaning=cleaning,
                        notes=f"random split by seed {seed}, grouped by English source text")
