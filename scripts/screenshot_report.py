#!/usr/bin/env python
"""Screenshots of the HTML report in headless Chromium: ``python scripts/screenshot_report.py results/report``.

Writes ``screenshot_index.png`` (the contents page) and ``screenshot_<page>.png`` (the top
``--height`` pixels of one notebook page, ``--page``: by default notebook 05, whose first figures are
within them) into the report folder. The pages are opened as ``file://`` URLs with networking off, so the screenshot also shows that
the report needs nothing from the network.

Chromium: ``--chromium PATH``, else ``$CHROMIUM``, else ``chromium`` on the PATH, else a copy unpacked
under ``data/.cache/chromium/`` (``--fetch`` makes it: ``apt-get download`` of Debian's ``chromium`` and
``chromium-common`` plus the shared libraries a Debian 12 base image lacks, unpacked in Python, no root
or dpkg needed; about 105 MB fetched, 340 MB unpacked). Exit status 3, with a one-line reason, when no
Chromium can run: ``run_all.sh`` then skips the screenshots without failing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a clone without installing the package

CACHE = ROOT / "data" / ".cache" / "chromium"
PACKAGES = ["chromium", "chromium-common"]
# libraries chromium links against that a minimal Debian 12 image lacks (found with ldd, one round at a time)
LIBRARY_PACKAGES = ["libopenh264-7", "libdouble-conversion3", "libharfbuzz-subset0", "libpulse0", "libflac12",
                    "libopus0", "libxnvctrl0", "libminizip1", "libopenjp2-7", "libogg0", "libsndfile1", "libasyncns0",
                    "libvorbis0a", "libvorbisenc2", "libmpg123-0", "libmp3lame0"]
BINARY = Path("usr/lib/chromium/chromium")
NO_CHROMIUM = 3


class ChromiumUnavailable(RuntimeError):
    """No Chromium that starts; the message says why."""


def _library_dirs(tree: Path) -> list[str]:
    return sorted({str(p.parent) for p in tree.rglob("*.so*") if p.is_file()})


def fetch(cache: Path = CACHE) -> Path:
    """Download the Debian packages with ``apt-get download`` and unpack them into ``cache/root``."""
    from cookie_lib.study.corpora.debian import deb_data_tar  # the project's .deb reader (ar + tarfile)

    if shutil.which("apt-get") is None:
        raise ChromiumUnavailable("apt-get is not available to download chromium")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["apt-get", "download", *PACKAGES, *LIBRARY_PACKAGES], cwd=debs, capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise ChromiumUnavailable(f"apt-get download failed: {(res.stderr or res.stdout).strip()[-300:]}")
    tmp = Path(tempfile.mkdtemp(prefix=".root.", dir=cache))
    try:
        for deb in sorted(debs.glob("*.deb")):
            with deb_data_tar(deb) as tar:
                for member in tar:
                    # files, folders and links that stay inside the tree; skip absolute links (e.g. to /etc)
                    if member.isdir() or member.isfile() or (member.issym() and not member.linkname.startswith("/")):
                        try:
                            tar.extract(member, tmp, filter="tar")
                        except tarfile.FilterError:
                            pass
        if (cache / "root").exists():
            shutil.rmtree(cache / "root")
        tmp.rename(cache / "root")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return cache / "root" / BINARY


def find_chromium(explicit: str | None = None, cache: Path = CACHE) -> tuple[Path, dict] | None:
    """(binary, environment) of a Chromium to run, or None when there is none (see the module docstring)."""
    env = dict(os.environ)
    for candidate in (explicit, os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return Path(candidate), env
    unpacked = cache / "root" / BINARY
    if unpacked.is_file():
        dirs = _library_dirs(cache / "root")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + [p for p in [os.environ.get("LD_LIBRARY_PATH")] if p])
        return unpacked, env
    return None


def missing_libraries(binary: Path, env: dict) -> list[str]:
    """Shared libraries ``ldd`` cannot resolve for ``binary`` ([] when it can start, or without ldd)."""
    if shutil.which("ldd") is None:
        return []
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line})


def screenshot(binary: Path, env: dict, url: str, out: Path, width: int, height: int, timeout: int = 90) -> Path:
    """One PNG of ``url`` at ``width`` x ``height`` CSS pixels; raises ChromiumUnavailable with Chromium's
    last words if no PNG appears."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.stem}.tmp.png")  # renamed over ``out`` once complete
    with tempfile.TemporaryDirectory(prefix="chromium-profile.") as profile:
        cmd = [str(binary), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-extensions", "--disable-background-networking", "--disable-component-update",
               # networking off: a page that needed the network would show the gap
               "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=3000",
               f"--screenshot={tmp_out}", url]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise ChromiumUnavailable(f"chromium did not finish {url} in {timeout} s") from err
        if res.returncode != 0 or not tmp_out.is_file():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ChromiumUnavailable(f"chromium exited {res.returncode} on {url}: {tail[0][:300]}")
        os.replace(tmp_out, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/screenshot_report.py", description=__doc__.splitlines()[0])
    p.add_argument("report", nargs="?", default="results/report", help="report folder (index.html and pages)")
    p.add_argument("--page", default="05_downstream.html", help="the notebook page to capture (default: %(default)s)")
    p.add_argument("--chromium", help="path of a chromium binary")
    p.add_argument("--fetch", action="store_true", help="download and unpack Debian's chromium if none is found")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2400, help="of the notebook page's screenshot, CSS px")
    p.add_argument("--index-height", type=int, default=1300, help="of the contents page's screenshot, CSS px")
    a = p.parse_args(argv)
    report = Path(a.report).resolve()
    page = a.page
    for name in ("index.html", page):
        if not (report / name).is_file():
            print(f"error: {report / name} does not exist (build the report first: scripts/build_report.py)",
                  file=sys.stderr)
            return 2
    try:
        found = find_chromium(a.chromium)
        if found is None and a.fetch:
            print("fetching chromium (apt-get download, unpacked under data/.cache/chromium) ...", flush=True)
            fetch()
            found = find_chromium(a.chromium)
        if found is None:
            raise ChromiumUnavailable("no chromium found (pass --chromium PATH, set $CHROMIUM, or use --fetch)")
        binary, env = found
        missing = missing_libraries(binary, env)
        if missing:
            raise ChromiumUnavailable(f"{binary} lacks shared libraries: {', '.join(missing)}")
        shots = [screenshot(binary, env, (report / "index.html").as_uri(), report / "screenshot_index.png",
                            a.width, a.index_height),
                 screenshot(binary, env, (report / page).as_uri(), report / f"screenshot_{Path(page).stem}.png",
                            a.width, a.height)]
    except ChromiumUnavailable as err:
        print(f"screenshots skipped: {err}", file=sys.stderr)
        return NO_CHROMIUM
    for shot in shots:
        print("wrote", shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
