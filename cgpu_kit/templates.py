"""Where the notebook templates are: ``cgpu_kit/_templates`` in an installed wheel, ``templates/`` in a checkout."""

from __future__ import annotations

from pathlib import Path

from .exceptions import MissingDependencyError

_HERE = Path(__file__).resolve().parent
_CANDIDATES = (_HERE / "_templates", _HERE.parent / "templates")


def templates_dir() -> Path:
    for folder in _CANDIDATES:
        if folder.is_dir() and any(folder.glob("*.ipynb")):
            return folder
    raise MissingDependencyError(
        f"cgpu_kit's notebook templates are missing (looked in {', '.join(map(str, _CANDIDATES))}); reinstall cgpu-kit"
    )


def template_path(name: str) -> Path:
    path = templates_dir() / name
    if not path.is_file():
        raise MissingDependencyError(f"template {name} is missing from {path.parent}; reinstall cgpu-kit")
    return path
