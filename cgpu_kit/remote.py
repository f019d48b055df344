"""A job's work folder on a runtime, driven through any transport with short, idempotent commands.

Launching is idempotent (a running or finished batch is not started twice), polling reads files the batch
writes as it goes, and fetching verifies size and sha256. A dropped connection therefore costs one call,
never the batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .exceptions import ConnectionLostError, RemoteCommandError, RuntimeLostError
from .runtime import layout
from .transports.base import Transport, sh
from .util import file_sha256, last_json_line

log = logging.getLogger(__name__)


class RemoteBatch:
    def __init__(self, transport: Transport, work_dir: str, *, call_timeout: float = 120.0) -> None:
        self.transport = transport
        self.work_dir = work_dir
        self.call_timeout = call_timeout

    def path(self, *names: str) -> str:
        return layout.join(self.work_dir, *names)

    def _python(self, module: str, *args: str) -> str:
        env = [f"{k}={v}" for k, v in self.transport.runtime_env().items()]
        prefix = sh("env", *env) + " " if env else ""
        return prefix + sh(self.transport.python, "-m", module, *args)

    def make_dirs(self) -> None:
        self.transport.run(sh("mkdir", "-p", "--", self.path(layout.PARTS)), timeout=self.call_timeout).check("creating the work folder")

    def upload(self, local: Path, name: str, *, timeout: float) -> bool:
        return self.transport.put(local, self.path(name), timeout=timeout)

    def free_bytes(self) -> int | None:
        """Free bytes in the remote root, or None when the runtime cannot say."""
        root = self.transport.remote_root
        result = self.transport.run(f"mkdir -p -- {sh(root)} && df -Pk -- {sh(root)}", timeout=self.call_timeout)
        for line in reversed(result.output.splitlines()):
            fields = line.split()
            if len(fields) >= 6 and fields[3].isdigit():
                return int(fields[3]) * 1024
        return None

    def launch(self) -> str:
        """Start the driver detached unless it runs or has finished; returns what the runtime said."""
        w = self.work_dir
        driver = self._python("cgpu_kit.runtime.driver", w)
        cmd = (
            f"cd {sh(w)} || exit 3; "
            f"if [ -f {layout.STATUS} ]; then echo finished; "
            f"elif [ -f {layout.PID} ] && kill -0 \"$(cat {layout.PID})\" 2>/dev/null; then echo running; "
            f"else nohup {driver} </dev/null >>{layout.RUNTIME_LOG} 2>&1 & echo $! >{layout.PID}; echo launched; fi"
        )
        result = self.transport.run(cmd, timeout=self.call_timeout)
        if result.exit_code == 3:
            raise RuntimeLostError(f"the work folder {w} is gone from the runtime", output=result.output)
        result.check("launching the batch")
        for word in ("launched", "running", "finished"):
            if word in result.output.split():
                return word
        raise ConnectionLostError("the launch command's answer was lost", output=result.output)

    def poll(self, since: int = 0) -> dict[str, Any]:
        direct = self.transport.read_status(self.work_dir, since)
        if direct is not None:
            return direct
        cmd = (
            f"if [ -d {sh(self.work_dir)} ]; then {self._python('cgpu_kit.runtime.status', self.work_dir, str(since))}; "
            "else echo '{\"state\": \"absent\"}'; fi"
        )
        result = self.transport.run(cmd, timeout=self.call_timeout)
        answer = last_json_line(result.output)
        if answer is not None:
            return answer
        if result.exit_code != 0 and "No module named" in result.output:
            raise RuntimeLostError("the shipped cgpu_kit is missing on the runtime (its set-up is gone)", output=result.output)
        raise ConnectionLostError("the status of the batch did not come back whole", output=result.output)

    def exists(self) -> bool:
        result = self.transport.run(f"[ -d {sh(self.work_dir)} ] && echo present || echo absent", timeout=self.call_timeout)
        words = result.output.split()
        if "present" in words:
            return True
        if "absent" in words:
            return False
        raise ConnectionLostError("the runtime's answer was lost", output=result.output)

    def fetch(self, name: str, local: Path, *, sha256: str | None = None, timeout: float) -> Path:
        try:
            self.transport.get(self.path(name), local, timeout=timeout)
        except RemoteCommandError:
            if not self.exists():
                raise RuntimeLostError(f"the work folder {self.work_dir} is gone from the runtime") from None
            raise
        if sha256 and file_sha256(local) != sha256:
            local.unlink(missing_ok=True)
            raise ConnectionLostError(f"{name} arrived corrupted (sha256 mismatch)")
        return local

    def cancel(self) -> None:
        self.transport.run(
            f"[ -d {sh(self.work_dir)} ] && touch {sh(self.path(layout.CANCEL))}; true", timeout=self.call_timeout
        )

    def remove(self) -> None:
        self.transport.run(sh("rm", "-rf", "--", self.work_dir), timeout=self.call_timeout).check("removing the work folder")
