"""WHERE jobs run: a registry of transports by backend name.

A backend is named ``KIND`` or ``KIND:ARG``; the ARG goes to the transport as the option :data:`ARG_OPTIONS`
names: ``colab:NAME`` runs on the colab session NAME, ``cgpu:CONFIG_DIR`` on the Colab account whose cgpu
config folder is CONFIG_DIR, ``local:DIR`` in the work folder DIR (see :mod:`cgpu_kit.runtimes`). Further options
(``gpu=``, ``keep_session=``) go to the transport's class.
"""

from __future__ import annotations

import importlib
import inspect

from ..exceptions import ParameterError
from .base import CommandResult, Transport, sh

#: backend name -> "module:Class", imported when first used
TRANSPORTS: dict[str, str] = {
    "local": "cgpu_kit.transports.local:LocalTransport",
    "cgpu": "cgpu_kit.transports.cgpu:CgpuTransport",
    "colab": "cgpu_kit.transports.colab:ColabTransport",
}


#: backend kind -> the transport option its ``:ARG`` sets (default ``session``)
ARG_OPTIONS: dict[str, str] = {"local": "remote_root", "cgpu": "config_dir", "colab": "session"}


def register(name: str, target: str, arg_option: str = "session") -> None:
    TRANSPORTS[name] = target
    ARG_OPTIONS[name] = arg_option


def get_transport(name: str, *, remote_root: str | None = None, **options: object) -> Transport:
    kind, _, arg = name.partition(":")
    try:
        target = TRANSPORTS[kind]
    except KeyError:
        raise ParameterError(f"unknown backend {name!r}; known: {', '.join(TRANSPORTS)}", name="backend") from None
    if arg:
        option = ARG_OPTIONS.get(kind, "session")
        if option == "remote_root":
            remote_root = remote_root or arg
        else:
            options[option] = arg
    module, _, cls = target.partition(":")
    transport_class = getattr(importlib.import_module(module), cls)
    unknown = sorted(set(options) - set(inspect.signature(transport_class).parameters))
    if unknown:
        flags = ", ".join({"gpu": "--colab-gpu"}.get(k, "--" + k.replace("_", "-")) for k in unknown)
        raise ParameterError(f"the {kind} backend takes no {flags} (only colab does)", name="backend")
    return transport_class(remote_root=remote_root, **options)


__all__ = ["CommandResult", "Transport", "TRANSPORTS", "get_transport", "register", "sh"]
