"""Make data/fixture_openclipart/openclipart-svg-fixture.deb: 14 public-domain Open Clip Art 0.18 drawings.

Reads the real Debian package (``apt-get download openclipart-svg``) and writes a tiny ``.deb`` with the
same layout (an ``ar`` archive: debian-binary, control.tar.xz, data.tar.xz with
usr/share/openclipart/svg/...), plus a symlink and a byte-identical copy, so that the builder's
unpacking, skipping and de-duplication are exercised. Usage::

    python data/fixture_openclipart/make_fixture.py data/.cache/openclipart-svg_*.deb
"""
import io
import sys
import tarfile
from pathlib import Path

from cookie_lib.study.corpora.openclipart import SVG_ROOT, iter_svgs

FILES = [  # chosen for variety: normal drawings, a flag close to an emoji, a Nicu title in pt units,
    "animals/birds/duck_yellow_ii_kurt_cagl_.svg",  # only an external PNG: renders blank
    "buildings/brick_frouke_01.svg",
    "electronics/diodes2.svg",
    "food/fruit/an_apple_01.svg",
    "geography/madrid_01.svg",  # has a description
    "office/mailbox1.svg",
    "recreation/music/piano_keys_jonathan_diet_01.svg",
    "shapes/arrows/arrow03_1.svg",  # "Clipart by Nicu Buculei - arrow08_4", width/height in pt, no viewBox
    "shapes/stars/star_05pt02step.svg",  # decorative folder: skipped
    "signs_and_symbols/flags/africa/tunisia.svg",
    "signs_and_symbols/flags/europe/france/france.svg",  # near-copy of the French flag emoji
    "signs_and_symbols/flame_jon_phillips_01.svg",
    "tools/mag3.svg",
    "transportation/roadsigns/one_way_sign_01.svg",
]
MTIME = 1593993600  # fixed, so the fixture is byte-reproducible


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """An ``ar`` archive (the .deb container): magic, then 60-byte headers + even-padded data."""
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{MTIME:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tar_xz(entries: list[tuple[str, bytes | str]]) -> bytes:
    """A tar.xz of (path, bytes) files and (path, "->target") symlinks, fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo("./" + name)
            info.mtime, info.uname, info.gname = MTIME, "root", "root"
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_deb(svgs: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .deb holding ``svgs`` {path under the svg root: bytes} and ``links`` {path: target}."""
    entries = [(SVG_ROOT + rel, data) for rel, data in sorted(svgs.items())]
    entries += [(SVG_ROOT + rel, target) for rel, target in sorted((links or {}).items())]
    control = tar_xz([("control", b"Package: openclipart-svg-fixture\nVersion: 0.18\nArchitecture: all\n"
                                  b"Description: a few Open Clip Art 0.18 drawings (test fixture)\n")])
    return ar_archive([("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar.xz", tar_xz(entries))])


def main(deb: str) -> None:
    wanted = set(FILES)
    svgs = {rel: data for rel, data in iter_svgs(Path(deb)) if rel in wanted}
    missing = wanted - set(svgs)
    if missing:
        raise SystemExit(f"not in {deb}: {sorted(missing)}")
    svgs["food/apple_copy.svg"] = svgs["food/fruit/an_apple_01.svg"]  # byte-identical copy: dropped
    out = Path(__file__).with_name("openclipart-svg-fixture.deb")
    out.write_bytes(make_deb(svgs, {"food/fruit/apple_link.svg": "an_apple_01.svg"}))  # symlink: skipped
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(svgs)} SVG files + 1 symlink)")


if __name__ == "__main__":
    main(sys.argv[1])
