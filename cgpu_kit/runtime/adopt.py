"""A jupyter_client kernel manager for the kernel prespawn.py launched: its provisioner takes that process
instead of launching one, once jupyter_client's own command, environment and working folder for the kernel
are found to be the ones it was launched with. nbclient and papermill then get it as any started kernel
manager (``has_kernel``; they only connect to it) and kernel.stop shuts it down as any other.

The connection file is the one the kernel wrote back at its start with the ports it bound (an ipykernel
launched with ports 0 picks free ones itself): adoption waits for those, and nothing here rewrites the file (no
other ports, keys or CurveZMQ keys: transport encryption stays off, as the kernel was launched without it).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from jupyter_core.utils import run_sync

from .prespawn import Prespawned, bound

#: how long adoption waits for the kernel launched ahead to bind its ports (it boots on a busy machine)
BIND_SECONDS = 60.0


class NotTheSameKernel(RuntimeError):
    """jupyter_client would launch this kernel otherwise than it was launched (kernel.start drops it and starts
    one as before; never seen outside the driver)."""


class AdoptingProvisioner(LocalProvisioner):  # type: ignore[misc]
    """LocalProvisioner whose first launch adopts the prespawned kernel; a restart launches as LocalProvisioner."""

    def __init__(self, pre: Prespawned, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pre: Prespawned | None = pre
        self._adopted_file: str | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        pre = self._pre
        if pre is None:
            return await super().pre_launch(**kwargs)
        km = self.parent
        kwargs.pop("transport_encryption", None)
        cmd = [os.path.expanduser(a) for a in km.format_kernel_cmd(extra_arguments=kwargs.pop("extra_arguments", []))]
        # the base class's, not LocalProvisioner's: that one picks ports and writes the connection file
        kwargs = await KernelProvisionerBase.pre_launch(self, cmd=cmd, **kwargs)
        env = dict(kwargs["env"], JPY_PARENT_PID=str(os.getpid()))  # as jupyter_client's launch_kernel adds it
        differ = [what for what, ours, theirs in (("command", pre.argv, cmd), ("environment", pre.env, env),
                                                  ("working folder", pre.cwd, kwargs.get("cwd"))) if ours != theirs]
        if differ:
            raise NotTheSameKernel(f"jupyter_client would launch it with another {' and '.join(differ)}"
                                   + (f": {cmd}, not {pre.argv}" if "command" in differ else ""))
        self.connection_info = km.get_connection_info()
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        pre, self._pre = self._pre, None
        if pre is None:
            return await super().launch_kernel(cmd, **kwargs)
        self.process, self.pid, self.cwd = pre.process, pre.process.pid, kwargs.get("cwd")
        try:
            self.pgid = os.getpgid(self.pid)
        except OSError:
            self.pgid = None
        self._adopted_file = pre.connection_file
        return self.connection_info

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if not restart and self._adopted_file:  # the kernel manager removes only files it wrote
            Path(self._adopted_file).unlink(missing_ok=True)
            self._adopted_file = None


def adopt(pre: Prespawned, kernel_spec_manager: Any) -> AsyncKernelManager:
    """A started kernel manager whose kernel is ``pre``'s process; raises (:class:`NotTheSameKernel` or what
    jupyter_client raised) where it cannot be, and the caller then discards ``pre``."""
    try:
        bound(pre, BIND_SECONDS)  # alive, and the ports it chose itself written back into its connection file
    except RuntimeError as exc:
        raise NotTheSameKernel(str(exc)) from None
    km = AsyncKernelManager(kernel_name=pre.kernel_name, kernel_spec_manager=kernel_spec_manager,
                            connection_file=pre.connection_file)
    if km.has_trait("transport_encryption"):  # jupyter_client 8.10: CurveZMQ keys only where asked for
        km.transport_encryption = "disabled"
    km.load_connection_file()
    km.kernel_id = str(uuid.uuid4())
    km.provisioner = AdoptingProvisioner(pre, kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
    run_sync(km.start_kernel)(cwd=pre.cwd)
    if km.provisioner.pid != pre.process.pid or km.curve_publickey is not None:
        raise NotTheSameKernel("jupyter_client did not take the kernel launched ahead as it was launched")
    return km
