"""A batch's files sent to a Colab runtime (cgpu or colab) in a number of calls that does not grow with them.

Every client call costs seconds (a process start, a login refresh, a websocket), so :meth:`send_batch` does:

1. one **check**: create the folders, start the batch's standby driver (its kernel boots and papermill
   imports while the next two calls run; only where the shipped cgpu_kit is there), read the free space, the
   size and sha256 of every file to send, and (when the session's set-up travels with this batch) the set-up
   marker, so a recycled runtime is found;
2. one **copy** of a stored zip of everything missing (and the shipped cgpu_kit when the set-up is missing),
   split into zips of at most ``copy_piece_bytes``; a single file larger than that goes in verified pieces as
   :meth:`put` sends it;
3. one **land** command: each zip's size and sha256 checked, its files written under their names and each
   checked again (size and sha256: nothing that verifies data is dropped), the set-up started when it was
   missing, and ``then`` (the launch) run once the runtime is ready.

A zip or file that did not arrive intact makes the land command exit 4: a retryable
:class:`~cgpu_kit.exceptions.ConnectionLostError`, and the retry's check skips what did arrive.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import CallRefusedError, ConnectionLostError, MissingDependencyError
from ..util import file_sha256
from .base import CommandResult, free_kib, sh

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..requirements import Requirements

log = logging.getLogger(__name__)

LANDED = 4

#: runs on the runtime (standard library only: the set-up may be missing): checks each zip, then writes its
#: members under their names (a temporary name first) and checks each one again
_LAND_SCRIPT = """\
import hashlib,json,os,sys,zipfile,base64
m=json.loads(base64.b64decode(sys.argv[1]))
def sha(p):
    h=hashlib.sha256()
    with open(p,'rb') as f:
        for b in iter(lambda:f.read(1<<20),b''):h.update(b)
    return h.hexdigest()
bad=[]
for z in m['zips']:
    if not os.path.isfile(z['path']) or os.path.getsize(z['path'])!=z['size'] or sha(z['path'])!=z['sha256']:
        bad.append(z['path']);continue
    with zipfile.ZipFile(z['path']) as f:
        for e in z['members']:
            os.makedirs(os.path.dirname(e['target']),exist_ok=True)
            tmp=e['target']+'.landing'
            with f.open(e['member']) as src,open(tmp,'wb') as dst:
                for b in iter(lambda:src.read(1<<20),b''):dst.write(b)
            if os.path.getsize(tmp)!=e['size'] or sha(tmp)!=e['sha256']:
                bad.append(e['target']);os.unlink(tmp);continue
            os.replace(tmp,e['target'])
    os.unlink(z['path'])
print('LANDED '+json.dumps(bad),flush=True)
sys.exit(4 if bad else 0)
"""


class BatchSending:
    """The :meth:`send_batch` of :class:`~cgpu_kit.transports._shell.ShellRuntimeTransport` (a mixin)."""

    remote_root: str
    python: str
    home: str
    copy_piece_bytes: int
    _bundle: Bundle | None
    _travelling_setup: Requirements | None = None
    _setup_timeout: float = 1800.0

    setup_travels = True

    def run(self, command: str, *, timeout: float) -> CommandResult:  # provided by the transport
        raise NotImplementedError

    def setup_on_next_batch(self, requirements: Requirements, *, timeout: float) -> None:
        """The next batch's check reads the set-up marker, and its land command sets the runtime up if needed."""
        from ..bundle import build_bundle

        self._bundle = self._bundle or build_bundle()
        self._travelling_setup = requirements
        self._setup_timeout = timeout

    def send_batch(self, files: Sequence[tuple[Path, str]], *, dirs: Sequence[str],
                   check_free: Callable[[int | None], None] | None, then: str, timeout: float,
                   ahead: str = "") -> CommandResult:
        deadline = time.monotonic() + timeout
        files = [(local, self._absolute(remote)) for local, remote in files]
        setup = self._travelling_setup
        bundle_remote = posixpath.join(self.home, "bundle.zip")
        if setup is not None and self._bundle is not None:
            files.append((self._bundle.path, bundle_remote))
        try:
            want = {remote: (local.stat().st_size, file_sha256(local)) for local, remote in files}
        except OSError as exc:
            raise CallRefusedError(f"cannot upload {exc.filename}: {exc.strerror}; check that the file is still there") from None

        have, free, marker = self._check(list(want), dirs, setup is not None, ahead=self._gated(ahead, setup),
                                         timeout=timeout)
        if check_free is not None:
            check_free(free)
        needs_setup = setup is not None and not self._marker_says(marker, *self._spec_and_bundle(setup))
        todo = [(local, remote) for local, remote in files if have.get(remote) != want[remote]
                and (remote != bundle_remote or needs_setup)]
        small = [(lo, re) for lo, re in todo if want[re][0] <= self.copy_piece_bytes]
        for local, remote in todo:
            if (local, remote) not in small:
                self._put_in_pieces(local, remote, want[remote], deadline=deadline)
        zips = self._send_zips(small, want, deadline=deadline)
        result = self._land(zips, setup if needs_setup else None, then, timeout=max(deadline - time.monotonic(), 60.0))
        self._travelling_setup = None
        return result

    # -- the three steps ----------------------------------------------------------------------------------------

    def _gated(self, ahead: str, setup: Requirements | None) -> str:
        """``ahead`` (a standby driver's start) run only where the shipped cgpu_kit it imports is there and, when
        the set-up travels with this batch, is this session's bundle (an older one would run the batch)."""
        if not ahead:
            return ""
        test = f"[ -f {sh(posixpath.join(self.home, 'lib', 'cgpu_kit', 'runtime', 'driver.py'))} ]"
        if setup is not None and self._bundle is not None:
            test += f" && grep -qF {sh(self._bundle.sha256)} {sh(posixpath.join(self.home, 'ready.json'))} 2>/dev/null"
        return f"if {test}; then {ahead}; fi"

    def _check(self, remotes: list[str], dirs: Sequence[str], marker: bool, *, ahead: str = "",
               timeout: float) -> tuple[dict[str, tuple[int, str]], int | None, str | None]:
        root = self.remote_root
        folders = sorted({*dirs, root, posixpath.join(self.home, "incoming"), *(posixpath.dirname(r) for r in remotes)})
        lines = [f"mkdir -p -- {sh(*folders)} || exit 1", *([ahead] if ahead else []),
                 f"printf 'D %s\\n' \"$(df -Pk -- {sh(root)} | tail -n 1)\""]
        for index, remote in enumerate(remotes):
            q = sh(remote)
            lines.append(f"if [ -f {q} ]; then printf 'F{index} %s %s\\n' \"$(stat -c %s -- {q})\" "
                         f"\"$(sha256sum < {q} | cut -c1-64)\"; else echo 'F{index} missing'; fi")
        if marker:
            init = posixpath.join(self.home, "lib", "cgpu_kit", "__init__.py")
            ready = posixpath.join(self.home, "ready.json")
            lines.append(f"if [ -f {sh(init)} ] && [ -f {sh(ready)} ]; then printf 'M '; cat {sh(ready)}; echo; "
                         "else echo 'M {}'; fi")
        result = self.run("; ".join(lines), timeout=timeout).check("checking the runtime before sending the batch")
        have: dict[str, tuple[int, str]] = {}
        seen, free, found = set(), None, None
        for line in result.output.splitlines():
            words = line.split()
            if words[:1] == ["D"]:
                free = free_kib(line[2:])
            elif words[:1] == ["M"]:
                found = line[2:].strip()
            elif words and words[0][:1] == "F" and words[0][1:].isdigit() and int(words[0][1:]) < len(remotes):
                index = int(words[0][1:])
                seen.add(index)
                if len(words) == 3 and words[1].isdigit():
                    have[remotes[index]] = (int(words[1]), words[2])
        if len(seen) != len(remotes) or (marker and found is None):
            raise ConnectionLostError("the check before sending the batch came back garbled", output=result.output)
        return have, free, found

    def _send_zips(self, files: list[tuple[Path, str]], want: dict[str, tuple[int, str]], *,
                   deadline: float) -> list[dict]:
        """Stored zips of at most ``copy_piece_bytes`` each, one client copy each (verified by the land)."""
        groups: list[list[tuple[Path, str]]] = []
        size = 0
        for local, remote in sorted(files, key=lambda f: want[f[1]][0]):
            if not groups or size + want[remote][0] > self.copy_piece_bytes:
                groups.append([])
                size = 0
            groups[-1].append((local, remote))
            size += want[remote][0]
        sent = []
        with tempfile.TemporaryDirectory(prefix="cgpu_kit_send_") as tmp:
            for number, group in enumerate(groups):
                path = Path(tmp) / f"batch{number}.zip"
                members = []
                with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
                    for index, (local, remote) in enumerate(group):
                        z.write(local, f"f{index:05d}")
                        members.append({"member": f"f{index:05d}", "target": remote, "size": want[remote][0],
                                        "sha256": want[remote][1]})
                digest = file_sha256(path)
                target = posixpath.join(self.home, "incoming", f"batch-{digest[:16]}.zip")
                self._send_one(path, target, deadline=deadline)
                sent.append({"path": target, "size": path.stat().st_size, "sha256": digest, "members": members})
                log.info("sent %d file(s) in one copy (%.1f MB)", len(group), path.stat().st_size / 1e6)
        return sent

    def _land(self, zips: list[dict], setup: Requirements | None, then: str, *, timeout: float) -> CommandResult:
        parts = []
        if zips:
            script = base64.b64encode(_LAND_SCRIPT.encode()).decode()
            manifest = base64.b64encode(json.dumps({"zips": zips}).encode()).decode()
            parts.append(sh(self.python, "-c", "import base64,sys;exec(base64.b64decode(sys.argv.pop(1)))", script,
                            manifest) + f" || exit {LANDED}")
        if setup is not None:
            bundle = self._bundle
            _, encoded = self._spec(setup)
            helper = sh(self.python, posixpath.join(self.home, "bundle.zip"), "setup", self.home, bundle.sha256, encoded)
            parts.append(f"s=$({helper}); printf '%s\\n' \"$s\"; "
                         "printf '%s\\n' \"$s\" | grep -q '^CGPUKIT_SETUP .*\"state\": \"ready\"' || exit 0")
        parts.append(then)
        result = self.run("; ".join(parts), timeout=timeout)
        if result.exit_code == LANDED or (zips and "LANDED " not in result.output):
            raise ConnectionLostError("the batch's files did not all arrive intact on the runtime; sending again",
                                      output=result.output[-2000:])
        if setup is None:
            return result
        answer = None
        for line in reversed(result.output.splitlines()):
            if line.startswith("CGPUKIT_SETUP "):
                answer = json.loads(line[len("CGPUKIT_SETUP "):])
                break
        if answer is None:
            raise ConnectionLostError("setting the runtime up: no answer from the set-up helper",
                                      output=result.output[-2000:])
        if answer["state"] == "ready":
            return result
        _, encoded = self._spec(setup)
        answer = self._wait_installing(answer, bundle.sha256, encoded, deadline=self.clock.now() + self._setup_timeout,
                                       timeout=self._setup_timeout)
        if answer["state"] == "failed":
            raise MissingDependencyError(
                f"setting the runtime up failed: {answer.get('error')}\n{answer.get('log', '')}".strip())
        if answer["state"] == "dead":
            raise ConnectionLostError("the set-up process died on the runtime; trying again", output=answer.get("log", ""))
        return self.run(then, timeout=timeout)

    def _spec_and_bundle(self, setup: Requirements) -> tuple[Requirements, str]:
        wanted, _ = self._spec(setup)
        return wanted, self._bundle.sha256
