"""Model archives (file:// .tar.gz and .zip): a good one is verified then unpacked, and one with a
member that would land outside the destination is refused before anything is written there."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tmo_runtime.fetcher import FetchError, IntegrityError, fetch

CONFIG = b'{"model_type": "bert"}'


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, type_: bytes = tarfile.SYMTYPE) -> str:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = target
    tar.addfile(info)
    return name


def _tar_gz(path: Path, build: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_good_tarball_is_verified_by_its_bytes_then_unpacked(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _add_file(tar, "model/config.json", CONFIG)
        _add_file(tar, "model/weights.bin", b"\0" * 64)
        _link(tar, "model/latest.json", "config.json")  # a link inside: fine

    archive = _tar_gz(tmp_path / "model.tar.gz", build)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = fetch(f"file://{archive}", tmp_path / "dest", base_dir=tmp_path, sha256=digest)
    assert out.is_relative_to(tmp_path / "dest")
    assert (out / "model" / "config.json").read_bytes() == CONFIG
    assert (out / "model" / "latest.json").read_bytes() == CONFIG
    assert (out / "model" / "weights.bin").stat().st_size == 64

    # The digest covers the archive's bytes: republished with other weights, it is refused and
    # nothing is unpacked.
    def tampered(tar: tarfile.TarFile) -> None:
        _add_file(tar, "model/config.json", CONFIG)
        _add_file(tar, "model/weights.bin", b"\1" * 64)
        _link(tar, "model/latest.json", "config.json")

    _tar_gz(archive, tampered)
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        fetch(f"file://{archive}", tmp_path / "dest2", base_dir=tmp_path, sha256=digest)
    assert not (tmp_path / "dest2").exists()


def test_good_zip_relative_to_the_manifest_unpacks(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    archive = tmp_path / "models" / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", CONFIG)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = fetch("file://models/model.zip", tmp_path / "dest", base_dir=tmp_path, sha256=digest)
    assert (out / "config.json").read_bytes() == CONFIG


# Each case: (the unsafe member's name, how to add it); `outside` is a directory beside dest.
UNSAFE_TARS: dict[str, Callable[[tarfile.TarFile, Path], str]] = {
    "parent": lambda t, _: _add(t, "../evil"),
    "nested-parent": lambda t, _: _add(t, "model/../../evil"),
    "absolute": lambda t, outside: _add(t, str(outside / "evil")),
    "symlink-out": lambda t, _: _link(t, "model/evil", "../../../evil"),
    "absolute-symlink": lambda t, outside: _link(t, "model/evil", str(outside)),
    "hardlink-out": lambda t, _: _link(t, "model/evil", "../../evil", tarfile.LNKTYPE),
}


def _add(tar: tarfile.TarFile, name: str) -> str:
    _add_file(tar, name, b"pwned")
    return name


@pytest.mark.parametrize("case", UNSAFE_TARS, ids=str)
def test_tarball_with_a_member_outside_the_destination_is_refused(
    tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in" / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        # A harmless member first: nothing at all is unpacked from a refused archive.
        _add_file(tar, "model/config.json", CONFIG)
        member = UNSAFE_TARS[case](tar, outside)
    before = _files(tmp_path)
    with pytest.raises(FetchError) as e:
        fetch(f"file://{archive}", tmp_path / "work" / "dest", base_dir=tmp_path)
    message = str(e.value)
    assert "evil.tar.gz" in message and repr(member) in message, message
    assert _files(tmp_path) == before  # nothing unpacked, inside dest or outside it


@pytest.mark.parametrize("member", ["../evil", "/evil", "model/../../evil"])
def test_zip_with_a_member_outside_the_destination_is_refused(tmp_path: Path, member: str) -> None:
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in" / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", CONFIG)
        zf.writestr(zipfile.ZipInfo(member), b"pwned")
    before = _files(tmp_path)
    with pytest.raises(FetchError) as e:
        fetch(f"file://{archive}", tmp_path / "work" / "dest", base_dir=tmp_path)
    message = str(e.value)
    assert "evil.zip" in message and repr(member) in message, message
    assert _files(tmp_path) == before
