"""Inputs to zip parts with a manifest, and zips back to files, safely.

A batch travels as one or more zip parts, each with a ``manifest.json`` naming its items: item id, original
file name, size, sha256 and the job's parameters. Media is already compressed, so members are stored, not
deflated. Members inside a part have safe names made from the item id (``i0003.mp4``); the original name
lives only in the manifest, so nothing a user called a file ever reaches a shell or a path on the runtime.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .exceptions import ArchiveError
from .util import atomic_path

MANIFEST = "manifest.json"
FORMAT = 1
TEXT_SUFFIXES = {".srt", ".vtt", ".json", ".txt", ".jsonl", ".ipynb", ".log", ".trf"}


@dataclass
class BatchItem:
    item_id: str
    source: str  # absolute local path of the input
    name: str  # its original file name
    size: int
    sha256: str
    file: str  # safe member name in the part and on the runtime
    part: int = 0
    out_stem: str = ""
    key: str = ""
    probe: dict[str, Any] = field(default_factory=dict)

    def manifest_record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("source", "out_stem")}


def safe_suffix(name: str) -> str:
    """The file's extension if it is plain (letters and digits, short), else nothing."""
    suffix = PurePosixPath(name.replace("\n", "_")).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def member_name(item_id: str, name: str) -> str:
    return item_id + safe_suffix(name)


def split_parts(items: Sequence[BatchItem], part_bytes: int) -> list[list[BatchItem]]:
    """Group items in order into parts of at most ``part_bytes`` (an item larger than that gets a part alone)."""
    parts: list[list[BatchItem]] = []
    current: list[BatchItem] = []
    size = 0
    for item in items:
        if current and size + item.size > part_bytes:
            parts.append(current)
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        parts.append(current)
    for index, part in enumerate(parts):
        for item in part:
            item.part = index
    return parts


def pack_part(items: Iterable[BatchItem], dest: Path, header: dict[str, Any], *, by_reference: bool = False) -> Path:
    """Write one part: the manifest first, then each input stored under its safe name. ``by_reference`` (a
    runtime on this machine, which reads the files where they are): the manifest alone, each item with the
    absolute ``path`` of its input, which the runtime links under the safe name (no copy of the media)."""
    items = list(items)
    records = [dict(i.manifest_record(), path=i.source) if by_reference else i.manifest_record() for i in items]
    manifest = dict(header, format=FORMAT, items=records)
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True), compress_type=zipfile.ZIP_DEFLATED)
        for item in items if not by_reference else ():
            zf.write(item.source, item.file)
    return dest


def read_manifest(zip_path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return json.loads(zf.read(MANIFEST))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{zip_path}: not a batch part ({exc})") from None


def pack_files(files: Iterable[tuple[Path, str]], dest: Path, *, manifest: dict[str, Any] | None = None) -> Path:
    """Zip ``(path, member name)`` pairs: text deflated, media stored; written atomically."""
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        if manifest is not None:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True), compress_type=zipfile.ZIP_DEFLATED)
        for path, arcname in files:
            kind = zipfile.ZIP_DEFLATED if Path(arcname).suffix.lower() in TEXT_SUFFIXES else zipfile.ZIP_STORED
            zf.write(path, arcname, compress_type=kind)
    return dest


def safe_extract(zip_path: Path, dest: Path) -> list[Path]:
    """Extract every member of ``zip_path`` under ``dest``, refusing any that would land outside it.

    Refused: absolute names, drive letters, ``..`` segments, symbolic links and other special files. The
    whole archive is checked before anything is written, so a refused archive writes nothing.
    """
    dest = dest.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{zip_path}: not a readable zip ({exc})") from None
    with zf:
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in zf.infolist():
            name = info.filename
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode not in (stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(f"{zip_path}: member {name!r} is a link or special file; refusing the archive")
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in pure.parts or "\x00" in name:
                raise ArchiveError(f"{zip_path}: member {name!r} would land outside {dest}; refusing the archive")
            target = (dest / pure).resolve()
            if target != dest and dest not in target.parents:
                raise ArchiveError(f"{zip_path}: member {name!r} would land outside {dest}; refusing the archive")
            plan.append((info, target))
        bad = zf.testzip()
        if bad is not None:
            raise ArchiveError(f"{zip_path}: member {bad!r} is corrupt (CRC mismatch)")
        written = []
        for info, target in plan:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(target)
    return written
