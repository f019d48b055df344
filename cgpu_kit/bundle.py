"""The very cgpu_kit installed here, zipped for a runtime: the runtime runs the same code as this machine.

The zip holds the package folder (``cgpu_kit/``, without byte code), the notebook templates as
``cgpu_kit/_templates/``, and at its top a ``__main__.py`` (:mod:`cgpu_kit.transports._cgpu_remote`) so that
``python3 bundle.zip setup ...`` unpacks and equips the runtime with nothing but the standard library.
It is built byte for byte the same from the same sources (sorted entries, fixed dates), so its sha256 names
a version of the code: an unchanged bundle is not sent again, and a runtime set up with another is set up anew.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .templates import templates_dir
from .util import atomic_path
from .util import cache_dir as user_cache_dir

REMOTE_MAIN = Path(__file__).resolve().parent / "transports" / "_cgpu_remote.py"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    size: int


def _members() -> list[tuple[str, Path]]:
    package = Path(__file__).resolve().parent
    members = []
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if path.is_dir() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo") or any(
            part.startswith(".") for part in rel.parts
        ):  # no hidden names on the runtime: its Jupyter server may refuse them
            continue
        members.append((f"cgpu_kit/{rel.as_posix()}", path))
    templates = templates_dir().resolve()
    if package not in templates.parents:
        members += [(f"cgpu_kit/_templates/{nb.name}", nb) for nb in sorted(templates.glob("*.ipynb"))]
    members.append(("__main__.py", REMOTE_MAIN))
    return members


def bundle_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in _members():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def build_bundle(cache_dir: Path | None = None) -> Bundle:
    """Zip the installed cgpu_kit into the cache (once per version of its sources) and return it."""
    data = bundle_bytes()
    digest = hashlib.sha256(data).hexdigest()
    folder = cache_dir or user_cache_dir("bundles")
    path = folder / f"cgpu_kit-{__version__}-{digest[:16]}.zip"
    if not path.is_file() or path.stat().st_size != len(data):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return Bundle(path, digest, len(data))


__all__ = ["Bundle", "build_bundle", "bundle_bytes"]
