"""``sysmsg``: system messages from the German gettext catalogs of a fixed list of Debian packages.

Each package is fetched with ``apt-get download`` into the cache and unpacked with ``dpkg -x``; every
``usr/share/locale/de*/LC_MESSAGES/*.mo`` becomes pairs (see :mod:`mtedge.data.gettext`). Messages are
independent, so the split is random by seed — grouped by source text, so all translations of one English
message land in the same split.
"""

from __future__ import annotations

import fnmatch
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
    # desktop and application catalogs (GNOME, Xfce, MATE, Cinnamon, KDE), added later; pinned likewise
    "gnome-control-center-data": "1:43.6-2~deb12u1", "nautilus-data": "43.2-1", "evince-common": "43.1-2+deb12u1",
    "gedit-common": "44.2-1", "gedit-plugins-common": "44.1-2", "eog": "43.2-1+deb12u1", "file-roller": "43.0-1",
    "baobab": "43.0-1", "gnome-calculator": "1:43.0.1-2", "gnome-disk-utility": "43.0-1",
    "gnome-system-monitor": "42.0-2", "gnome-terminal-data": "3.46.8-1", "gnome-shell-common": "43.9-0+deb12u2",
    "mutter-common": "43.8-0+deb12u1", "gnome-settings-daemon-common": "43.0-4",
    "gnome-session-common": "43.0-1+deb12u1", "gnome-desktop3-data": "43.2-2", "gnome-maps": "43.5-2~deb12u1",
    "gnome-weather": "43.0-1", "gnome-clocks": "43.0-1", "gnome-calendar": "43.1-2", "gnome-contacts": "43.1-1",
    "gnome-characters": "43.1-1+deb12u1", "gnome-font-viewer": "43.0-1", "gnome-logs": "43.0-1",
    "gnome-tweaks": "42~beta-4", "gnome-text-editor": "43.2-1", "gnome-keyring": "42.1-1+b2",
    "seahorse": "43.0-1", "gnome-screenshot": "41.0-2", "gnome-sudoku": "1:43.1-1", "gnome-mines": "1:40.1-1",
    "gnome-chess": "1:43.1-1", "totem-common": "43.0-2", "rhythmbox-data": "3.4.6-2", "cheese-common": "43.0-1",
    "simple-scan": "42.5-2", "yelp": "42.2-1+deb12u2", "zenity-common": "3.44.0-1",
    "gvfs-common": "1.50.3-1+deb12u1", "libgtk-3-common": "3.24.38-2~deb12u3",
    "libgtk-4-common": "4.8.3+ds-2+deb12u1", "evolution-data-server-common": "3.46.4-2+deb12u1",
    "evolution-common": "3.46.4-2+deb12u1", "gnome-boxes": "43.2-1", "gnome-music": "42.1-1",
    "gucharmap": "1:15.0.2-1", "dconf-editor": "43.0-1", "deja-dup": "44.0-2",
    "network-manager-gnome": "1.30.0-2", "tracker": "3.4.2-1", "brasero-common": "3.12.3-2",
    "shotwell-common": "0.30.17-1", "gcr": "3.41.1-1+b1", "thunar-data": "4.18.4-1", "mousepad": "0.5.10-2",
    "ristretto": "0.12.4-1", "parole": "4.16.0-3", "xfce4-panel": "4.18.2-1", "xfce4-settings": "4.18.2-1",
    "xfce4-session": "4.18.1-1", "xfce4-terminal": "1.0.4-1", "xfce4-appfinder": "4.18.0-1",
    "xfce4-notifyd": "0.7.3-1", "xfce4-power-manager-data": "4.18.1-1", "xfce4-screenshooter": "1.10.3-1",
    "xfce4-taskmanager": "1.5.5-1", "xfce4-whiskermenu-plugin": "2.7.2-1", "xfce4-pulseaudio-plugin": "0.4.5-1",
    "xfce4-weather-plugin": "0.11.3-1~deb12u1", "xfce4-clipman": "2:1.6.2-1", "xfdesktop4-data": "4.18.1-1",
    "xfwm4": "4.18.0-1", "libxfce4ui-common": "4.18.2-2", "thunar-volman": "4.18.0-1",
    "thunar-archive-plugin": "0.5.0-1", "catfish": "4.16.4-2", "xfce4-dict": "0.8.4-1+b1",
    "network-manager": "1.42.4-1+deb12u1", "pulseaudio": "16.1+dfsg1-2+b1", "gparted-common": "1.3.1-1",
    "synaptic": "0.91.3", "transmission-gtk": "3.00-2.1+deb12u1", "filezilla-common": "3.63.0-1+deb12u3",
    "audacity-data": "3.2.4+dfsg-1", "pidgin-data": "2.14.12-1", "hexchat-common": "2.16.1-1",
    "geany-common": "1.38-1", "geany-plugins-common": "1.38+dfsg-2", "claws-mail-i18n": "4.1.1-2",
    "gnumeric-common": "1.12.55-1", "inkscape": "1.2.2-2+deb12u1", "vlc-l10n": "3.0.24-0+deb12u1",
    "gimp-data": "2.10.34-1+deb12u10", "meld": "3.22.0-2", "remmina-common": "1.4.29+dfsg-1",
    "blueman": "2.3.5-2+b1", "system-config-printer-common": "1.5.18-1", "lightdm-gtk-greeter": "2.0.8-2+b1",
    "xarchiver": "1:0.5.4.20-2", "galculator": "2.1.4-1.2", "easytag": "2.4.3-5+b1", "gthumb-data": "3:3.12.2-3",
    "xsane-common": "0.999-12.1~deb12u1", "gramps": "5.1.5-1", "pluma-common": "1.26.0-1+deb12u1",
    "caja-common": "1.26.1-1+deb12u1", "atril-common": "1.26.0-2+deb12u4", "engrampa-common": "1.26.0-1+deb12u2",
    "mate-control-center-common": "1.26.0-2+deb12u1", "mate-terminal-common": "1.26.0-2",
    "cinnamon-l10n": "5.6.1-2", "dolphin": "4:22.12.3-1", "konsole": "4:22.12.3-1+deb12u1",
    "okular": "4:22.12.3-1+deb12u1", "kate5-data": "4:22.12.3-1", "kwin-data": "4:5.27.5-3",
    "plasma-desktop-data": "4:5.27.5-2", "plasma-workspace-data": "4:5.27.5-2+deb12u2", "kdeconnect": "22.12.3-1",
    "kinfocenter": "4:5.27.5-2", "plasma-nm": "4:5.27.5-2", "ark": "4:22.12.3-1+deb12u1",
    "gwenview": "4:22.12.3-1", "kcalc": "4:22.12.3-1", "systemsettings": "4:5.27.5-2",
    "powerdevil-data": "4:5.27.5-2", "kio-extras-data": "4:22.12.3-1",
}
# Kept out of this corpus for good: these packages' catalogs are reserved for an unseen evaluation set.
# fnmatch patterns against the package name ("*x*": any package with x in its name).
# (one string split on spaces, so that no reserved name stands quoted in a recipe as if it were a source)
RESERVED = tuple("*systemd* grep sed man-db psmisc *polkit* *policykit* libelf1 libpam-runtime "
                 "*avahi* *packagekit* *appstream* *gdk-pixbuf*".split())


def reserved(package: str) -> bool:
    """True when ``package`` matches a :data:`RESERVED` pattern and must not be in :data:`PINNED`."""
    return any(fnmatch.fnmatchcase(package, pattern) for pattern in RESERVED)


def check_not_reserved(packages=PINNED) -> None:
    clash = sorted(name for name in packages if reserved(name))
    if clash:
        raise ValueError(f"sysmsg: reserved (evaluation-only) packages in the list: {', '.join(clash)}")


check_not_reserved()  # at import, so an edit to PINNED that slips one in fails at once
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
    # a cached fallback (another version) is retried too: the pinned one may be reachable now
    missing = [p for p in packages if p not in debs or _deb_field(debs[p], "Version") != PINNED[p]]
    if missing:
        try:
            run(["apt-get", "download", *(f"{p}={PINNED[p]}" for p in missing)], cwd=cache)
        except subprocess.CalledProcessError:
            # A machine image's package lists can predate the pinned point-release versions (seen: eog
            # 43.2-1+deb12u1 and three more were unknown until `apt-get update`): refresh them once.
            run(["apt-get", "update", "-qq"], cwd=cache)
            for name in missing:  # one at a time, so one vanished version does not stop the rest
                try:
                    run(["apt-get", "download", f"{name}={PINNED[name]}"], cwd=cache)
                except subprocess.CalledProcessError:
                    print(f"warning: {name}={PINNED[name]} is no longer in the archive; taking the current "
                          f"version (the splits will differ from the recorded hashes)", flush=True)
                    if name not in debs:
                        run(["apt-get", "download", name], cwd=cache)
        debs = cached()
    still = [p for p in packages if p not in debs]
    if still:
        raise SystemExit(f"apt-get download gave no .deb for: {', '.join(still)}")
    return debs


def build(seed: int = 0) -> dict:
    check_not_reserved()
    debs = fetch_debs()
    unpack_root = DOWNLOADS / "debs-unpacked"
    files: list[tuple[str, Path]] = []
    packages = {}
    for name in PACKAGES:
        deb = debs[name]
        target = unpack_root / deb.stem  # per version: a cached fallback must not stand in for the pinned one
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
