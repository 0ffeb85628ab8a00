"""Debian packages read with the standard library: a ``.deb`` is an ``ar`` archive whose member
``data.tar.*`` holds the package's file tree (no dpkg or Debian tool needed)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path


def deb_members(deb: Path) -> dict[str, bytes]:
    """Members of an ``ar`` archive (a .deb) as {name: bytes}, read with the standard library.

    ar format: the magic ``!<arch>\\n``, then per member a 60-byte header (name 16 bytes, mtime 12,
    uid 6, gid 6, mode 8, size 10, magic ``\\x60\\n``) followed by ``size`` bytes, padded to an even offset.
    """
    data = Path(deb).read_bytes()
    if data[:8] != b"!<arch>\n":
        raise ValueError(f"{deb}: not an ar archive (a .deb starts with '!<arch>'), got {data[:8]!r}")
    out, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError(f"{deb}: corrupt ar member header at byte {pos}")
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The package's file tree (``data.tar.xz``/``.gz``/``.bz2``/uncompressed) as an open TarFile."""
    members = deb_members(deb)
    for name, mode in (("data.tar.xz", "r:xz"), ("data.tar.gz", "r:gz"), ("data.tar.bz2", "r:bz2"),
                       ("data.tar", "r:")):
        if name in members:
            return tarfile.open(fileobj=io.BytesIO(members[name]), mode=mode)
    raise ValueError(f"{deb}: no readable data.tar member (members: {sorted(members)}; zstd needs Python 3.14)")
