"""A job's work folder on a runtime, driven through any transport with short, idempotent commands.

Launching is idempotent (a running or finished batch is not started twice), polling reads files the batch
writes as it goes, and fetching verifies size and sha256. A dropped connection therefore costs one call,
never the batch.

Calls are what a batch pays for (each ``cgpu`` call is seconds), so the batch's files are not sent one by one:
``upload`` only stages them, and ``launch`` hands them all to :meth:`Transport.send_batch` with the launch
command, which a Colab transport turns into one check, one copy and one verify-unpack-launch command. A poll
waits on the runtime for something to happen (``Transport.poll_wait``) and brings finished chunks and, at the
end, the logs inline, verified by sha256 (``Transport.inline_bytes``); ``fetch`` takes them from there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import CgpuKitError, ConnectionLostError, RemoteCommandError, RuntimeLostError
from .runtime import layout
from .transports.base import CommandResult, Transport, sh
from .util import file_sha256, last_json_line

log = logging.getLogger(__name__)

#: the logs a finished batch leaves in its work folder, brought home by ``download``
LOGS = (layout.EXECUTED, layout.RUNTIME_LOG, layout.RESULTS, layout.STATUS)


@dataclass
class _Held:
    """What this process holds of one remote batch between two calls: files staged for the launch, data that
    came inline with a poll, and the final status of a finished batch (it no longer changes)."""

    files: dict[str, tuple[Path, float]] = field(default_factory=dict)
    check_free: Callable[[int | None], None] | None = None
    need_bytes: int | None = None
    inline: dict[str, bytes] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    finished: dict[str, Any] | None = None
    finished_since: int = 0
    #: where the final poll moved the folder once all of it had come inline (the runtime removes it itself)
    tidied: str | None = None


_HELD: dict[tuple[str, str], _Held] = {}


class RemoteBatch:
    def __init__(self, transport: Transport, work_dir: str, *, call_timeout: float = 120.0) -> None:
        self.transport = transport
        self.work_dir = work_dir
        self.call_timeout = call_timeout

    @property
    def held(self) -> _Held:
        return _HELD.setdefault((self.transport.key, self.work_dir), _Held())

    def path(self, *names: str) -> str:
        return layout.join(self.work_dir, *names)

    def _python(self, module: str, *args: str) -> str:
        env = [f"{k}={v}" for k, v in self.transport.runtime_env().items()]
        prefix = sh("env", *env) + " " if env else ""
        return prefix + sh(self.transport.python, "-m", module, *args)

    def make_dirs(self) -> None:
        self.transport.run(sh("mkdir", "-p", "--", self.path(layout.PARTS)), timeout=self.call_timeout).check("creating the work folder")

    def upload(self, local: Path, name: str, *, timeout: float) -> bool:
        """Stage ``local`` to be sent with the launch (one batch of calls for all files); True: it will be."""
        self.held.files[self.path(name)] = (local, timeout)
        return True

    def expect_space(self, check: Callable[[int | None], None], need_bytes: int | None = None) -> None:
        """``check(free_bytes)`` runs on the runtime's answer before anything staged is sent (it may refuse);
        ``need_bytes``, what it asks of the runtime, lets a transport check it there, in the landing call."""
        self.held.check_free = check
        self.held.need_bytes = need_bytes

    def free_bytes(self) -> int | None:
        """Free bytes in the remote root, or None when the runtime cannot say."""
        root = self.transport.remote_root
        result = self.transport.run(f"mkdir -p -- {sh(root)} && df -Pk -- {sh(root)}", timeout=self.call_timeout)
        for line in reversed(result.output.splitlines()):
            fields = line.split()
            if len(fields) >= 6 and fields[3].isdigit():
                return int(fields[3]) * 1024
        return None

    def standby_command(self, warm: Sequence[str] = (), preload: dict[str, Any] | None = None,
                        after: str | None = None) -> str:
        """A shell command that starts a standby driver in the work folder (its kernel started, papermill and
        the ``warm`` modules imported, the processor's model loaded: ``preload`` is ``{"processor": "module:Class",
        "params": {...}}``: cgpu_kit/runtime/driver.py), detached and silent, unless a driver or a
        standby is there already; the launch then claims it instead of starting a driver. Harmless where it
        cannot start (no cgpu_kit on the runtime yet): the launch starts a driver as before. ``after``: the work
        folder of the batch whose good end starts it with no launch (runtime/standby.py)."""
        w = self.work_dir
        flags = [a for m in warm for a in ("--warm", m)] + (["--after", after] if after else [])
        if preload:
            flags += ["--preload", json.dumps(preload, separators=(",", ":"), default=str)]
        driver = self._python("cgpu_kit.runtime.driver", w, "--standby", *flags)
        alive = 'kill -0 "$(cat {} 2>/dev/null)" 2>/dev/null'
        start = f"{{ nohup {driver} </dev/null >>{layout.RUNTIME_LOG} 2>&1 & echo $! >{layout.STANDBY}; }}"
        if after:  # handed to the driver of the part before, while it runs (runtime/handover.py); else our own
            def there(name: str) -> str:
                return sh(layout.join(after, name))

            # named beside the part before (the same remote root): a line of its own even where the root has a newline
            name = posixpath.basename(w) if posixpath.dirname(w) == posixpath.dirname(after) else w
            start = (f"{{ ( flock 9 && [ ! -e {there(layout.NEXT_CLOSED)} ] && p=$(cat {there(layout.PID)} 2>/dev/null) "
                     f"&& [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && printf '%s\\n' {sh(name)} >>{there(layout.NEXT)} "
                     f"&& echo \"$p\" >{layout.STANDBY} ) 9>>{there(layout.NEXT_LOCK)} || {start}; }}")
        return (
            f"( mkdir -p -- {sh(w)} && cd -- {sh(w)} && [ ! -f {layout.STATUS} ] && ! {alive.format(layout.PID)} "
            f"&& ! {alive.format(layout.STANDBY)} && {start} ) >/dev/null 2>&1"
        )

    def launch(self, ahead: str = "") -> str:
        """Send what is staged, then start the driver detached unless it runs or has finished (in the same
        call where the transport allows); returns what the runtime said. A live standby driver is claimed (an
        atomic rename of its pid file) instead of starting one. ``ahead`` (:meth:`standby_command`) travels in
        the send's first call, so a Colab runtime boots the kernel while the files are copied."""
        w = self.work_dir
        driver = self._python("cgpu_kit.runtime.driver", w)
        cmd = (
            f"cd {sh(w)} || exit 3; "
            f"if [ -f {layout.STATUS} ]; then echo finished; "
            f"elif [ -f {layout.PID} ] && kill -0 \"$(cat {layout.PID})\" 2>/dev/null; then echo running; "
            f"elif kill -0 \"$(cat {layout.STANDBY} 2>/dev/null)\" 2>/dev/null && mv -f {layout.STANDBY} {layout.PID} "
            f"2>/dev/null; then echo launched; "
            f"else nohup {driver} </dev/null >>{layout.RUNTIME_LOG} 2>&1 & echo $! >{layout.PID}; echo launched; fi"
        )
        if self.held.files:
            result = self._send(cmd, ahead)
        else:
            result = self.transport.run(cmd, timeout=self.call_timeout)
        if result.exit_code == 3:
            raise RuntimeLostError(f"the work folder {w} is gone from the runtime", output=result.output)
        result.check("launching the batch")
        for word in ("launched", "running", "finished"):
            if word in result.output.split():
                return word
        raise ConnectionLostError("the launch command's answer was lost", output=result.output)

    def send_ahead(self, standby: str) -> None:
        """Send what is staged and start ``standby`` (:meth:`standby_command`) instead of launching: the batch
        waits on the runtime, its kernel warm, for the launch that claims it (lookahead.py)."""
        self._send(f"{standby}; true").check("sending a part ahead")

    def _send(self, then: str, ahead: str = "") -> CommandResult:
        """Send the staged files (transport.send_batch), then run ``then`` on the runtime; forget them once sent."""
        held = self.held
        files = [(local, remote) for remote, (local, _) in held.files.items()]
        timeout = self.call_timeout + sum(t for _, t in held.files.values())
        result = self.transport.send_batch(files, dirs=[self.path(layout.PARTS)], check_free=held.check_free,
                                           then=then, timeout=timeout, ahead=ahead, need_bytes=held.need_bytes)
        held.files.clear()
        held.finished = None
        return result

    def poll(self, since: int = 0, seen: set[str] | frozenset[str] = frozenset(), near: float = 0.0) -> dict[str, Any]:
        """The batch's status; ``seen``: the chunks already home (not waited for, not sent inline); ``near``:
        also answer (``near: true``) once the batch's items left would take that many seconds or less."""
        direct = self.transport.read_status(self.work_dir, since)
        if direct is not None:
            return direct
        held = self.held
        if held.finished is not None and since >= held.finished_since:
            return dict(held.finished, results=held.finished["results"][since - held.finished_since:])
        wait = getattr(self.transport, "poll_wait", 0.0)
        inline = getattr(self.transport, "inline_bytes", 0)
        args = [self.work_dir, str(since), "--wait", f"{wait:g}", "--inline", str(inline),
                "--skip", ",".join(sorted(seen)), "--tidy", *(["--near", f"{near:g}"] if near > 0 else [])]
        cmd = (
            f"if [ -d {sh(self.work_dir)} ]; then {self._python('cgpu_kit.runtime.status', *args)}; "
            "else echo '{\"state\": \"absent\"}'; fi"
        )
        result = self.transport.run(cmd, timeout=self.call_timeout + wait)
        answer = last_json_line(result.output)
        if answer is not None:
            self._take_inline(result.output)
            held.absent.update(answer.pop("absent_logs", []))
            held.tidied = answer.pop("tidied", None) or held.tidied
            if answer.get("state") == "finished":
                held.finished, held.finished_since = answer, since
            return answer
        if result.exit_code != 0 and "No module named" in result.output:
            raise RuntimeLostError("the shipped cgpu_kit is missing on the runtime (its set-up is gone)", output=result.output)
        raise ConnectionLostError("the status of the batch did not come back whole", output=result.output)

    def exists(self) -> bool:
        where = self.held.tidied or self.work_dir
        result = self.transport.run(f"[ -d {sh(where)} ] && echo present || echo absent", timeout=self.call_timeout)
        words = result.output.split()
        if "present" in words:
            return True
        if "absent" in words:
            return False
        raise ConnectionLostError("the runtime's answer was lost", output=result.output)

    def _take_inline(self, output: str) -> None:
        """Keep the files that came inline with a poll, each checked against its size and sha256."""
        name, size, digest, lines = None, 0, "", []
        for line in output.splitlines():
            words = line.split()
            if words[:1] == ["INLINE"] and len(words) == 4 and words[2].isdigit():
                name, size, digest, lines = words[1], int(words[2]), words[3], []
            elif words[:1] == ["INLINE_END"] and name is not None:
                try:
                    data = base64.b64decode("".join(lines), validate=True)
                except ValueError:
                    data = b""
                if len(data) == size and hashlib.sha256(data).hexdigest() == digest:
                    self.held.inline[name] = data
                else:
                    log.info("%s came inline damaged; it will be fetched", name)
                name = None
            elif name is not None:
                lines.append(line.strip())

    def fetch(self, name: str, local: Path, *, sha256: str | None = None, timeout: float) -> Path:
        data = self.held.inline.pop(name, None)
        if data is not None and (sha256 is None or hashlib.sha256(data).hexdigest() == sha256):
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.inline")
            tmp.write_bytes(data)
            tmp.replace(local)
            return local
        if name in self.held.absent:
            raise RemoteCommandError(f"{self.path(name)}: no such file on the runtime", exit_code=2)
        try:  # from the trash the final poll moved the folder to, while it is there (a damaged inline copy)
            self.transport.get(layout.join(self.held.tidied, name) if self.held.tidied else self.path(name), local,
                               timeout=timeout)
        except RemoteCommandError:
            if not self.exists():
                raise RuntimeLostError(f"the work folder {self.work_dir} is gone from the runtime") from None
            raise
        if sha256 and file_sha256(local) != sha256:
            local.unlink(missing_ok=True)
            raise ConnectionLostError(f"{name} arrived corrupted (sha256 mismatch)")
        return local

    def discard_standby(self, stop: bool = False) -> None:
        """Stop a standby driver that no launch claimed (every input was done, skipped or bad), and remove the
        work folder it made when no batch landed there; a claimed one is not touched, unless ``stop``: then its
        batch is cancelled too (one that started itself after the batch before it). Never raises."""
        w, standby = sh(self.work_dir), sh(self.path(layout.STANDBY))
        cancel = f"; [ -d {w} ] && touch {sh(self.path(layout.CANCEL))}" if stop else ""
        try:
            self.transport.run(
                f"[ -f {standby} ] && mv -f {standby} {standby}.expired 2>/dev/null && "
                f"{{ [ -f {sh(self.path(layout.JOB_FILE))} ] || rm -rf -- {w}; }}{cancel}; true", timeout=self.call_timeout)
        except (CgpuKitError, OSError) as exc:
            log.debug("standby driver of %s not discarded: %s", self.work_dir, exc)

    def cancel(self) -> None:
        self.transport.run(
            f"[ -d {sh(self.work_dir)} ] && touch {sh(self.path(layout.CANCEL))}; true", timeout=self.call_timeout
        )

    def remove(self) -> None:
        """Remove the work folder, unless the final poll already moved it away (then the runtime removes it)."""
        try:
            if self.held.tidied is None:
                self.transport.run(sh("rm", "-rf", "--", self.work_dir), timeout=self.call_timeout).check(
                    "removing the work folder")
        finally:
            self.forget()

    def forget(self) -> None:
        """Let go of what this process holds of the batch (staged files, inline data, its final status: a
        batch's item records): the job is over, whether or not its folder could be removed."""
        _HELD.pop((self.transport.key, self.work_dir), None)
