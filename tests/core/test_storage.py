"""Both storage backends behave the same; S3 is exercised over HTTP against moto's server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.storage import LocalStorage, ObjectNotFound, ObjectStorage, make_storage
from app.settings import Settings


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "objects")
    return make_storage(request.getfixturevalue("s3_settings"))


def test_put_get_list_delete(storage: ObjectStorage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    storage.put_file("a/b/one.bin", src)
    storage.put_bytes("a/b/two.txt", b"hello")
    storage.put_bytes("a/c/three.txt", b"3")
    storage.put_bytes("other/four.txt", b"4")

    assert src.exists()
    assert storage.get_bytes("a/b/two.txt") == b"hello"
    with storage.open("a/b/one.bin") as f:
        assert len(f.read()) == 3_000_000
    assert storage.exists("a/b/one.bin")
    assert not storage.exists("a/b/missing")
    assert sorted(storage.list("a/")) == ["a/b/one.bin", "a/b/two.txt", "a/c/three.txt"]

    out = tmp_path / "out.bin"
    storage.download("a/b/one.bin", out)
    assert out.stat().st_size == 3_000_000

    assert storage.delete_prefix("a/") == 3
    assert list(storage.list("a/")) == []
    assert storage.get_bytes("other/four.txt") == b"4"
    storage.delete("other/four.txt")
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("other/four.txt")


def test_put_file_move_removes_source(storage: ObjectStorage, tmp_path: Path) -> None:
    src = tmp_path / "moved.bin"
    src.write_bytes(b"payload")
    storage.put_file("m/moved.bin", src, move=True)
    assert not src.exists()
    assert storage.get_bytes("m/moved.bin") == b"payload"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_rejects_unsafe_keys(storage: ObjectStorage, key: str) -> None:
    with pytest.raises(ValueError):
        storage.put_bytes(key, b"x")


def test_make_storage_rejects_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file:// or s3://"):
        make_storage(Settings(data_dir=tmp_path, storage_url="ftp://x"))
