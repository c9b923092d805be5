"""Crafted zips that passed every per-entry check before issue 20: small entries adding up to a bomb, entries
that overlap (CVE-2024-0450), and local headers that name another file than the central directory does.
Each was accepted before the fix (the assertions on the message fail without it)."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")


def _local_header(name: str, data: bytes) -> bytes:
    crc = zlib.crc32(data)
    return (
        _LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(name), 0) + name.encode()
    )


def _central_header(name: str, data: bytes, offset: int) -> bytes:
    crc = zlib.crc32(data)
    return (
        _CENTRAL.pack(
            b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, crc, len(data), len(data), len(name), 0, 0, 0, 0, 0, offset
        )
        + name.encode()
    )


def _write(path: Path, body: bytes, centrals: list[bytes]) -> Path:
    directory = b"".join(centrals)
    end = _END.pack(b"PK\x05\x06", 0, 0, len(centrals), len(centrals), len(directory), len(body), 0)
    path.write_bytes(body + directory + end)
    return path


def test_entries_small_enough_to_skip_the_ratio_check_cannot_add_up_to_a_bomb(ingest_kit, tmp_path):
    """The issue's case: JPEGs padded with zeros to 1 MiB each (not over the per-entry floor), 640x as a
    whole. Refused from the headers, before anything is inflated: each entry is held to its declared size as
    it is read, so the declared total bounds what comes out."""
    k = ingest_kit
    path = tmp_path / "padded.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(100):
            jpeg = k.image()
            zf.writestr(f"img{i:03d}.jpg", jpeg + bytes(2**20 - len(jpeg)))
    assert path.stat().st_size < 2**20
    err = k.error(path, 413, "as a whole", "over the limit of 200x", "zip bomb")
    assert err.source is None
    # The same files, fewer of them: 8 MiB unpack from any zip whatever the ratio.
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(tmp_path / "few.zip", "w", zipfile.ZIP_DEFLATED) as out:
        for name in zf.namelist()[:5]:
            out.writestr(name, zf.read(name))
    assert len(k.ingest(tmp_path / "few.zip").images) == 5


def test_an_entry_whose_data_holds_the_next_entry_is_refused(ingest_kit, tmp_path):
    """readme.txt's stored data is b.jpg's local header and bytes: two valid entries sharing bytes (what
    CVE-2024-0450's check in ZipFile.open refuses). Before the fix b.jpg was staged and readme.txt ignored."""
    k = ingest_kit
    jpeg = k.image()
    inner = _local_header("b.jpg", jpeg) + jpeg
    outer = _local_header("readme.txt", inner)
    body = outer + inner
    path = _write(
        tmp_path / "overlap.zip",
        body,
        [_central_header("readme.txt", inner, 0), _central_header("b.jpg", jpeg, len(outer))],
    )
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None, "every entry's CRC is right: only the layout is wrong"
    err = k.error(path, 400, "readme.txt", "overlaps the entry after it")
    assert err.source == "readme.txt"


def test_two_entries_sharing_one_local_header_are_refused(ingest_kit, tmp_path):
    """The "better zip bomb" in its simplest form: many directory entries, one compressed stream."""
    k = ingest_kit
    jpeg = k.image()
    body = _local_header("a.jpg", jpeg) + jpeg
    path = _write(
        tmp_path / "shared.zip", body, [_central_header(n, jpeg, 0) for n in ("a.jpg", "b.jpg", "c.jpg")]
    )
    k.error(path, 400, "'a.jpg', 'b.jpg', 'c.jpg'", "share one local header")


def test_a_local_header_naming_another_file_is_refused(ingest_kit, tmp_path):
    """The central directory says images/b.jpg; the local header, which an extractor reading the archive
    front to back would use, says ../../bb.jpg."""
    k = ingest_kit
    path = k.zip({"images/a.jpg": k.image(), "images/b.jpg": k.image()}, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.getinfo("images/b.jpg").header_offset
    at = offset + 30
    assert data[at : at + 12] == b"images/b.jpg"
    data[at : at + 12] = b"../../bb.jpg"
    path.write_bytes(bytes(data))
    err = k.error(path, 400, "'images/b.jpg' is named '../../bb.jpg' in its local header")
    assert err.source == "images/b.jpg"
