"""Batches as zips: one manifest, media stored not deflated, and archives from a runtime unpacked safely."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest

from cgpu_kit.batch import BatchItem, member_name, pack_part, read_manifest, safe_extract, split_parts
from cgpu_kit.exceptions import ArchiveError


def _item(tmp_path: Path, n: int, name: str, size: int) -> BatchItem:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return BatchItem(f"i{n:04d}", str(path), name, size, sha, member_name(f"i{n:04d}", name))


def test_when_inputs_are_packed_then_the_manifest_names_them_and_media_is_stored_not_deflated(tmp_path):
    items = [_item(tmp_path, 0, "a clip.MP4", 5000), _item(tmp_path, 1, "$(x).mov", 3000)]
    part = pack_part(items, tmp_path / "part.zip", {"job_type": "stabilize", "params": {"smoothing": 10}})

    manifest = read_manifest(part)
    assert manifest["job_type"] == "stabilize" and manifest["params"] == {"smoothing": 10}
    assert [(r["item_id"], r["name"], r["size"], r["file"]) for r in manifest["items"]] == [
        ("i0000", "a clip.MP4", 5000, "i0000.mp4"), ("i0001", "$(x).mov", 3000, "i0001.mov")]
    with zipfile.ZipFile(part) as zf:
        for rec in manifest["items"]:
            info = zf.getinfo(rec["file"])
            assert info.compress_type == zipfile.ZIP_STORED
            assert hashlib.sha256(zf.read(info)).hexdigest() == rec["sha256"]


def test_member_names_never_carry_what_the_user_typed():
    assert member_name("i0003", "-rf $(touch x);.mp4") == "i0003.mp4"
    assert member_name("i0004", "weird.e$t") == "i0004"
    assert member_name("i0005", "no extension") == "i0005"


def test_parts_are_bounded_in_size_and_keep_the_order(tmp_path):
    items = [_item(tmp_path, n, f"f{n}", 400) for n in range(5)]
    parts = split_parts(items, 1000)
    assert [[i.item_id for i in p] for p in parts] == [["i0000", "i0001"], ["i0002", "i0003"], ["i0004"]]
    assert [i.part for i in items] == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("member", ["/etc/evil", "../evil", "a/../../evil", "C:/evil"])
def test_when_an_archive_points_outside_then_it_is_refused_whole(tmp_path, member):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(member, "evil")
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError, match="outside"):
        safe_extract(bad, dest)
    assert not (dest / "fine.txt").exists() and not (tmp_path / "evil").exists()


def test_when_an_archive_holds_a_link_then_it_is_refused(tmp_path):
    bad = tmp_path / "link.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="link"):
        safe_extract(bad, tmp_path / "dest")


def test_when_an_archive_is_corrupt_then_the_error_says_so(tmp_path):
    good = tmp_path / "g.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("data.bin", b"A" * 1000)
    blob = bytearray(good.read_bytes())
    blob[blob.index(b"A" * 100) + 10] ^= 0xFF
    good.write_bytes(bytes(blob))
    with pytest.raises(ArchiveError, match="corrupt"):
        safe_extract(good, tmp_path / "dest")
    (tmp_path / "n.zip").write_text("not a zip")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        safe_extract(tmp_path / "n.zip", tmp_path / "dest")
