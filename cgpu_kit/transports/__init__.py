"""WHERE jobs run: a registry of transports by backend name."""

from __future__ import annotations

import importlib

from ..exceptions import ParameterError
from .base import CommandResult, Transport, sh

#: backend name -> "module:Class", imported when first used
TRANSPORTS: dict[str, str] = {
    "local": "cgpu_kit.transports.local:LocalTransport",
    "cgpu": "cgpu_kit.transports.cgpu:CgpuTransport",
}


def register(name: str, target: str) -> None:
    TRANSPORTS[name] = target


def get_transport(name: str, *, remote_root: str | None = None) -> Transport:
    try:
        target = TRANSPORTS[name]
    except KeyError:
        raise ParameterError(f"unknown backend {name!r}; known: {', '.join(TRANSPORTS)}", name="backend") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(remote_root=remote_root)


__all__ = ["CommandResult", "Transport", "TRANSPORTS", "get_transport", "register", "sh"]
