"""Archive-level defences: malformed, hostile and oversized zips."""

from __future__ import annotations

import io
import stat
import warnings
import zipfile

import pytest

from app.datasets.ingest import IngestError, IngestLimits, ingest_zip
from app.datasets.ingest.safezip import SafeZip, normalize_entry_name


def _zip_with_info(path, infos_and_data):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in infos_and_data:
            zf.writestr(info, data)
    return path


def test_not_a_zip(ingest_kit, tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is a text file, not an archive" * 10)
    ingest_kit.error(path, 400, "not a readable zip")


def test_zero_byte_upload(ingest_kit, tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"")
    ingest_kit.error(path, 400, "not a readable zip")


def test_truncated_zip(ingest_kit):
    path = ingest_kit.zip({f"img{i}.jpg": ingest_kit.image() for i in range(3)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    ingest_kit.error(path, 400, "not a readable zip")


def test_corrupt_entry_data_names_the_entry(ingest_kit):
    path = ingest_kit.zip({"a.jpg": ingest_kit.image(), "b.jpg": ingest_kit.image()})
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("b.jpg")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len("b.jpg")
    for i in range(start + 20, start + 60):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    err = ingest_kit.error(path, 400, "b.jpg", "corrupt")
    assert err.source == "b.jpg"


def test_empty_zip(ingest_kit):
    ingest_kit.error(ingest_kit.zip({}), 400, "the zip is empty")


def test_zip_with_only_folders_and_junk_is_empty(ingest_kit, tmp_path):
    path = _zip_with_info(
        tmp_path / "junk.zip",
        [
            (zipfile.ZipInfo("photos/"), b""),
            (zipfile.ZipInfo("__MACOSX/photos/._a.jpg"), b"junk"),
            (zipfile.ZipInfo("photos/.DS_Store"), b"junk"),
            (zipfile.ZipInfo("photos/Thumbs.db"), b"junk"),
        ],
    )
    ingest_kit.error(path, 400, "the zip is empty")


def test_junk_entries_are_ignored(ingest_kit):
    path = ingest_kit.zip(
        {
            "photos/a.jpg": ingest_kit.image(),
            "__MACOSX/photos/._a.jpg": b"\x00\x05\x16\x07 resource fork",
            "photos/._a.jpg": b"appledouble",
            "photos/.DS_Store": b"junk",
        }
    )
    upload = ingest_kit.ingest(path)
    assert [i.source for i in upload.images] == ["photos/a.jpg"]
    assert upload.warnings == []


@pytest.mark.parametrize(
    "name",
    ["../evil.jpg", "photos/../../evil.jpg", "..\\evil.jpg", "photos\\..\\..\\evil.jpg"],
)
def test_parent_traversal_entry(ingest_kit, tmp_path, name):
    path = _zip_with_info(tmp_path / "t.zip", [(zipfile.ZipInfo(name), ingest_kit.image())])
    err = ingest_kit.error(path, 400, name, "outside")
    assert err.source == name


@pytest.mark.parametrize(
    "name", ["/etc/evil.jpg", "C:\\evil.jpg", "c:/evil.jpg", "\\\\server\\share\\evil.jpg"]
)
def test_absolute_path_entry(ingest_kit, tmp_path, name):
    path = _zip_with_info(tmp_path / "t.zip", [(zipfile.ZipInfo(name), ingest_kit.image())])
    ingest_kit.error(path, 400, name, "absolute")


def test_nul_in_entry_name(ingest_kit):
    path = ingest_kit.zip({"photoXa.jpg": ingest_kit.image()})
    path.write_bytes(path.read_bytes().replace(b"photoXa.jpg", b"photo\x00a.jpg"))
    ingest_kit.error(path, 400, "NUL", "photo\\0a.jpg")


def test_symlink_entry(ingest_kit, tmp_path):
    link = zipfile.ZipInfo("photos/link.jpg")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = _zip_with_info(
        tmp_path / "s.zip", [(zipfile.ZipInfo("photos/a.jpg"), ingest_kit.image()), (link, b"/etc/passwd")]
    )
    err = ingest_kit.error(path, 400, "photos/link.jpg", "symbolic link")
    assert err.source == "photos/link.jpg"


def test_duplicate_entry_names(ingest_kit, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _zip_with_info(
            tmp_path / "d.zip",
            [(zipfile.ZipInfo("a.jpg"), ingest_kit.image()), (zipfile.ZipInfo("a.jpg"), ingest_kit.image())],
        )
    ingest_kit.error(path, 400, "a.jpg", "more than one entry")


def test_encrypted_entry(ingest_kit):
    path = ingest_kit.zip({"a.jpg": ingest_kit.image()})
    ingest_kit.patch_entry(path, "a.jpg", flag_bits=0x1)
    ingest_kit.error(path, 400, "a.jpg", "encrypted")


def test_too_many_entries(ingest_kit):
    path = ingest_kit.zip({f"{i}.jpg": ingest_kit.image() for i in range(5)})
    ingest_kit.error(path, 400, "5 entries", "limit of 3", limits=IngestLimits(max_entries=3))


def test_zip_bomb_by_ratio(ingest_kit):
    path = ingest_kit.zip({"a.jpg": ingest_kit.image(), "bomb.jpg": bytes(50 * 2**20)})
    err = ingest_kit.error(path, 413, "bomb.jpg", "zip bomb")
    assert err.source == "bomb.jpg"


def test_small_files_may_compress_extremely_well(ingest_kit):
    # Ratio is only enforced beyond 1 MiB: a 500 KiB blank mask file is normal.
    path = ingest_kit.zip({"a.jpg": ingest_kit.image(), "notes/blank.txt": bytes(500 * 2**10)})
    upload = ingest_kit.ingest(path)
    assert len(upload.images) == 1


def test_zip_bomb_by_total_size(ingest_kit):
    path = ingest_kit.zip({f"{i}.jpg": ingest_kit.image() for i in range(3)})
    ingest_kit.error(path, 413, "limit of", limits=IngestLimits(max_uncompressed_bytes=1000))


def test_entry_lying_about_its_size_deflated(ingest_kit):
    # A declared 1000 bytes passes the header pre-check; the entry really holds 50 MiB and must
    # be stopped as it is read.
    path = ingest_kit.zip({"a.jpg": ingest_kit.image(), "bomb.jpg": bytes(50 * 2**20)})
    ingest_kit.patch_entry(path, "bomb.jpg", file_size=1000)
    err = ingest_kit.error(path, 413, "bomb.jpg", "more than the 1000 bytes")
    assert err.source == "bomb.jpg"


def test_stored_entry_lying_about_its_size(ingest_kit):
    image = ingest_kit.image(size=(300, 300))
    path = ingest_kit.zip({"big.jpg": image}, compression=zipfile.ZIP_STORED)
    ingest_kit.patch_entry(path, "big.jpg", file_size=100)
    ingest_kit.error(path, 413, "big.jpg", "more than the 100 bytes")


def test_entry_declaring_more_than_it_holds(ingest_kit):
    path = ingest_kit.zip({"a.jpg": ingest_kit.image()}, compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(path) as zf:
        real = zf.getinfo("a.jpg").file_size
    ingest_kit.patch_entry(path, "a.jpg", file_size=real + 10)
    ingest_kit.error(path, 400, "a.jpg", "corrupt")


def test_limits_count_bytes_actually_read_not_headers(ingest_kit, monkeypatch):
    """With the header pre-check disabled, the counting while reading still stops a bomb."""
    monkeypatch.setattr(SafeZip, "_precheck_declared_sizes", lambda self: None)
    bomb = ingest_kit.zip({"a.jpg": ingest_kit.image(), "bomb.jpg": bytes(50 * 2**20)})
    ingest_kit.error(bomb, 413, "bomb.jpg", "zip bomb")
    many = ingest_kit.zip({f"{i}.jpg": ingest_kit.image() for i in range(3)})
    ingest_kit.error(many, 413, "limit of", limits=IngestLimits(max_uncompressed_bytes=1000))


def test_bzip2_entries_are_read(ingest_kit):
    path = ingest_kit.zip({"a.jpg": ingest_kit.image()}, compression=zipfile.ZIP_BZIP2)
    assert len(ingest_kit.ingest(path).images) == 1


def test_unsupported_compression_method(ingest_kit):
    path = ingest_kit.zip({"a.jpg": ingest_kit.image()}, compression=zipfile.ZIP_LZMA)
    ingest_kit.error(path, 400, "a.jpg", "LZMA")


def test_entry_names_are_normalised():
    assert normalize_entry_name("photos\\train\\a.jpg") == "photos/train/a.jpg"
    assert normalize_entry_name("./photos//a.jpg") == "photos/a.jpg"
    assert normalize_entry_name("photos/..a.jpg") == "photos/..a.jpg"


def test_ingest_accepts_any_seekable_stream(ingest_kit, tmp_path):
    data = ingest_kit.zip({"a.jpg": ingest_kit.image()}).read_bytes()
    staging = tmp_path / "st"
    staging.mkdir()
    upload = ingest_zip(io.BytesIO(data), staging, IngestLimits())
    assert upload.images[0].staged_path.parent == staging
    with pytest.raises(IngestError):
        ingest_zip(io.BytesIO(data[:100]), staging, IngestLimits())
