"""Read an untrusted zip without letting it escape the staging folder or exhaust memory and disk.

Entries are decompressed here rather than through `ZipFile.open`, because that reader silently
stops at the size the header declares: we want to *see* an entry that yields more than it
declares (a lying header) and count every byte that really comes out, so the limits hold
whatever the headers say.

Not using `ZipFile.open` also means doing ourselves the two checks it makes of each entry's local header
(`_check_layout`): the name there must be the central directory's (a zip whose two directories disagree shows
one file to a validator and another to an extractor), and an entry's data must end before the next entry
begins (CVE-2024-0450: overlapping entries let one compressed stream be counted as many files, the "better
zip bomb"). Expansion is bounded for the archive as a whole too, not only per entry over 1 MiB: two hundred
1 MiB files of zeros in a 330 KB zip pass every per-entry check.
"""

from __future__ import annotations

import bisect
import bz2
import hashlib
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import ArchiveTooLarge, UnsafeArchive
from .models import IngestLimits

CHUNK = 2**20
# Compressed input is fed in smaller slices so zlib's unconsumed tail (copied on every call)
# stays small even for highly compressible entries.
_RAW_CHUNK = 256 * 2**10
_RATIO_FLOOR = 2**20
# The whole archive may unpack to this much whatever its ratio (a small zip of blank masks is normal).
_ARCHIVE_RATIO_FLOOR = 8 * 2**20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version .. sizes), name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_JUNK_BASENAMES = {".ds_store", "thumbs.db", "desktop.ini"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_METHOD_NAMES = {9: "Deflate64", 14: "LZMA", 93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES encryption"}
# Everything zipfile may raise on a damaged archive; none of it is a bug on our side.
_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    zlib.error,
    NotImplementedError,
    IndexError,
    KeyError,
)


@dataclass(frozen=True)
class ZipEntry:
    name: str  # normalised: forward slashes, no `.` or empty components
    info: zipfile.ZipInfo

    @property
    def declared_size(self) -> int:
        return self.info.file_size


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def normalize_entry_name(raw: str) -> str:
    """Return the entry's path with `/` separators, or raise if it could land outside the
    extraction root. Backslashes count as separators because Windows tools write them."""
    shown = raw.replace("\x00", "\\0")
    if "\x00" in raw:
        raise UnsafeArchive(f"zip entry '{shown}' has a NUL byte in its name", source=shown)
    name = raw.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(f"zip entry '{raw}' has an absolute path", source=raw)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"zip entry '{raw}' points outside the archive ('..' in its path)", source=raw)
    return "/".join(parts)


def is_junk(name: str) -> bool:
    """Files that operating systems sprinkle into archives and nobody means to upload."""
    base = posixpath.basename(name)
    return name.split("/", 1)[0] == "__MACOSX" or base.startswith("._") or base.lower() in _JUNK_BASENAMES


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


class SafeZip:
    """A validated view of the archive: `entries` are the regular, non-junk files."""

    def __init__(self, fileobj: BinaryIO, limits: IngestLimits) -> None:
        self._fp = fileobj
        self._limits = limits
        self.bytes_read = 0
        self._data_start: dict[int, int] = {}  # header offset -> where the entry's data begins
        try:
            self.archive_size = fileobj.seek(0, 2)
            fileobj.seek(0)
            self._zip = zipfile.ZipFile(fileobj)
            infos = self._zip.infolist()
        except _CORRUPT as exc:
            raise UnsafeArchive(
                f"the upload is not a readable zip file; it may be incomplete or not a zip at all ({exc})"
            ) from exc
        try:
            if len(infos) > limits.max_entries:
                raise UnsafeArchive(
                    f"the zip has {len(infos)} entries, more than the limit of {limits.max_entries}"
                )
            self.entries = self._validate(infos)
            self._check_layout(infos)
            self._precheck_declared_sizes()
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _validate(self, infos: list[zipfile.ZipInfo]) -> list[ZipEntry]:
        entries: list[ZipEntry] = []
        seen: set[str] = set()
        for info in infos:
            raw = info.orig_filename
            name = normalize_entry_name(raw)
            if _is_symlink(info):
                raise UnsafeArchive(f"zip entry '{raw}' is a symbolic link, which is not allowed", source=raw)
            if info.is_dir() or raw.endswith("\\") or not name or is_junk(name):
                continue
            if info.flag_bits & 0x1:
                raise UnsafeArchive(
                    f"zip entry '{raw}' is encrypted; upload a zip without a password", source=raw
                )
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
                method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                raise UnsafeArchive(
                    f"zip entry '{raw}' uses {method} compression, which is not supported; "
                    "re-create the zip with standard (deflate) compression",
                    source=raw,
                )
            # Two entries with one name would let what we validate differ from what we use.
            if name in seen:
                raise UnsafeArchive(f"the zip has more than one entry named '{name}'", source=name)
            seen.add(name)
            entries.append(ZipEntry(name, info))
        if not entries:
            raise UnsafeArchive("the zip is empty (it holds no files)")
        return entries

    def _check_layout(self, infos: list[zipfile.ZipInfo]) -> None:
        """Each entry's local header names it as the central directory does, and its data ends before the
        next entry's header (or the central directory) begins: no two entries share bytes."""
        starts = sorted(info.header_offset for info in infos)
        for a, b in zip(starts, starts[1:], strict=False):
            if a == b:
                shared = [i.orig_filename for i in infos if i.header_offset == a]
                raise UnsafeArchive(
                    f"zip entries {', '.join(repr(n) for n in shared[:3])} share one local header; "
                    "the zip is malformed or crafted to overlap entries (a zip bomb)",
                    source=shared[0],
                )
        central = getattr(self._zip, "start_dir", self.archive_size)
        for info in infos:
            raw = info.orig_filename
            try:
                self._fp.seek(info.header_offset)
                header = self._fp.read(_LOCAL_HEADER.size)
                signature, name_len, extra_len = _LOCAL_HEADER.unpack(header)
                local_name = self._fp.read(name_len)
            except (OSError, ValueError, struct.error) as exc:
                raise UnsafeArchive(f"zip entry '{raw}' has no readable local header", source=raw) from exc
            if signature != _LOCAL_SIGNATURE:
                raise UnsafeArchive(
                    f"zip entry '{raw}' has no local header where the directory says", source=raw
                )
            # zipfile decoded the central name as UTF-8 when flag 0x800 says so, else as cp437: encode it back.
            encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
            try:
                central_name = raw.encode(encoding)
            except UnicodeEncodeError:
                central_name = b""
            if local_name != central_name:
                shown = local_name.decode(encoding, errors="replace")
                raise UnsafeArchive(
                    f"zip entry '{raw}' is named '{shown}' in its local header; a zip whose two directories "
                    "disagree is malformed or crafted",
                    source=raw,
                )
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            following = bisect.bisect_right(starts, info.header_offset)
            end_limit = starts[following] if following < len(starts) else central
            if start + info.compress_size > end_limit:
                raise UnsafeArchive(
                    f"zip entry '{raw}' overlaps the entry after it; the zip is malformed or crafted to reuse "
                    "one compressed stream for several files (a zip bomb)",
                    source=raw,
                )
            self._data_start[info.header_offset] = start

    def _precheck_declared_sizes(self) -> None:
        """Fail fast on what the headers admit to; the real guard is the counting in `_account`."""
        limits = self._limits
        total = sum(e.declared_size for e in self.entries)
        if total > limits.max_uncompressed_bytes:
            raise ArchiveTooLarge(
                f"the zip unpacks to {human_bytes(total)}, more than the limit of "
                f"{human_bytes(limits.max_uncompressed_bytes)}"
            )
        for entry in self.entries:
            size, packed = entry.declared_size, max(entry.info.compress_size, 1)
            if size > _RATIO_FLOOR and size > limits.max_ratio * packed:
                raise self._ratio_error(entry, size)
        # After the entries' own checks, which name a culprit when there is one.
        if total > _ARCHIVE_RATIO_FLOOR and total > limits.max_ratio * self.archive_size:
            raise self._archive_ratio_error(total)

    def _ratio_error(self, entry: ZipEntry, produced: int) -> ArchiveTooLarge:
        packed = max(entry.info.compress_size, 1)
        return ArchiveTooLarge(
            f"zip entry '{entry.name}' expands {produced / packed:.0f}x ({human_bytes(packed)} to at least "
            f"{human_bytes(produced)}), over the limit of {self._limits.max_ratio:g}x; "
            "this looks like a zip bomb",
            source=entry.name,
        )

    def _archive_ratio_error(self, produced: int) -> ArchiveTooLarge:
        return ArchiveTooLarge(
            f"the zip expands {produced / max(self.archive_size, 1):.0f}x as a whole "
            f"({human_bytes(self.archive_size)} to {human_bytes(produced)}), over the limit of "
            f"{self._limits.max_ratio:g}x; this looks like a zip bomb"
        )

    def _account(self, entry: ZipEntry, produced: int, fresh: int) -> None:
        self.bytes_read += fresh
        if produced > entry.declared_size:
            raise ArchiveTooLarge(
                f"zip entry '{entry.name}' unpacks to more than the {entry.declared_size} bytes its header "
                "declares; the zip is malformed or a zip bomb",
                source=entry.name,
            )
        if self.bytes_read > self._limits.max_uncompressed_bytes:
            limit = human_bytes(self._limits.max_uncompressed_bytes)
            raise ArchiveTooLarge(
                f"the zip unpacks to more than the limit of {limit}",
                source=entry.name,
            )
        if produced > _RATIO_FLOOR and produced > self._limits.max_ratio * max(entry.info.compress_size, 1):
            raise self._ratio_error(entry, produced)

    def _raw_chunks(self, entry: ZipEntry, size: int) -> Iterator[bytes]:
        info = entry.info
        pos = self._data_start[info.header_offset]  # found and checked by _check_layout
        left = info.compress_size
        while left > 0:
            # Seek every time: a caller may interleave other reads on the shared file object.
            self._fp.seek(pos)
            data = self._fp.read(min(size, left))
            if not data:
                raise EOFError("entry data cut short")
            pos += len(data)
            left -= len(data)
            yield data

    def _decompressed(self, entry: ZipEntry, chunk: int) -> Iterator[bytes]:
        method = entry.info.compress_type
        if method == zipfile.ZIP_STORED:
            yield from self._raw_chunks(entry, min(chunk, CHUNK))
        elif method == zipfile.ZIP_DEFLATED:
            yield from _inflate(self._raw_chunks(entry, _RAW_CHUNK), chunk)
        else:
            yield from _bunzip(self._raw_chunks(entry, _RAW_CHUNK), chunk)

    def iter_chunks(self, entry: ZipEntry, chunk: int = CHUNK) -> Generator[bytes, None, None]:
        """Yield the entry's bytes in pieces of at most `chunk`, enforcing every limit on the way
        and checking the CRC at the end."""
        produced = 0
        crc = 0
        try:
            for data in self._decompressed(entry, chunk):
                produced += len(data)
                self._account(entry, produced, len(data))
                crc = zlib.crc32(data, crc)
                yield data
        except (EOFError, OSError, ValueError, zlib.error, zipfile.BadZipFile, struct.error) as exc:
            raise UnsafeArchive(
                f"zip entry '{entry.name}' is corrupt or the zip is truncated ({exc})", source=entry.name
            ) from exc
        if produced != entry.declared_size or crc != entry.info.CRC:
            raise UnsafeArchive(
                f"zip entry '{entry.name}' is corrupt: its content does not match its size or checksum",
                source=entry.name,
            )

    def head(self, entry: ZipEntry, n: int) -> bytes:
        """The first `n` bytes, for sniffing a file's type without unpacking all of it."""
        out = b""
        chunks = self.iter_chunks(entry, chunk=n)
        try:
            for data in chunks:
                out += data
                if len(out) >= n:
                    break
        finally:
            chunks.close()
        return out[:n]

    def read_bytes(self, entry: ZipEntry, max_bytes: int) -> bytearray:
        if entry.declared_size > max_bytes:
            raise ArchiveTooLarge(
                f"{entry.name} is {human_bytes(entry.declared_size)}, more than the limit of "
                f"{human_bytes(max_bytes)}",
                source=entry.name,
            )
        # The declared size was checked above and `_account` stops anything beyond it. One growing
        # buffer rather than a list of chunks and a join: the file is held once, not twice.
        out = bytearray()
        for data in self.iter_chunks(entry):
            out += data
        return out

    def extract(self, entry: ZipEntry, dest: Path) -> str:
        """Copy the entry's exact bytes to `dest` and return their sha256."""
        digest = hashlib.sha256()
        with dest.open("wb") as out:
            for data in self.iter_chunks(entry):
                digest.update(data)
                out.write(data)
        return digest.hexdigest()


def _inflate(raw: Iterator[bytes], chunk: int) -> Iterator[bytes]:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    for data in raw:
        while True:
            out = inflater.decompress(data, chunk)
            if out:
                yield out
            if inflater.eof:
                return
            data = inflater.unconsumed_tail
            # A full output buffer may leave output pending inside zlib even with no input left.
            if not data and len(out) < chunk:
                break
    raise EOFError("deflate stream ended early")


def _bunzip(raw: Iterator[bytes], chunk: int) -> Iterator[bytes]:
    decompressor = bz2.BZ2Decompressor()
    for data in raw:
        out = decompressor.decompress(data, chunk)
        while True:
            if out:
                yield out
            if decompressor.eof:
                return
            if decompressor.needs_input:
                break
            out = decompressor.decompress(b"", chunk)
    raise EOFError("bzip2 stream ended early")
