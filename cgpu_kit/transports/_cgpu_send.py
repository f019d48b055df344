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

Where the client allows calls side by side (``overlap_calls``: cgpu), the copy and the land go at once, the
land waiting on the runtime (up to ``poll_wait``) for the zips to arrive, so the two cost one call's time; a
copy that fails stops the waiting land. And once the runtime has answered this session (so no call can be
the one that assigns a runtime: two at once could assign two), a batch's first try folds the check into
that land call too (:meth:`BatchSending._send_folded`): two calls' time for the whole send. A land that waited
in vain lands nothing and launches nothing (exit :data:`NOT_YET`); it is run again once the copy is done.

A zip or file that did not arrive intact makes the land command exit 4: a retryable
:class:`~cgpu_kit.exceptions.ConnectionLostError`, and the retry's check skips what did arrive.
"""

from __future__ import annotations

import base64
import json
import logging
import posixpath
import secrets
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import CallRefusedError, CgpuKitError, ConnectionLostError, MissingDependencyError
from ..util import file_sha256
from ._copies import Copies, Sent
from .base import CommandResult, free_kib, sh

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..requirements import Requirements

log = logging.getLogger(__name__)

LANDED = 4
#: a land that waited for its zips in vain: nothing landed, nothing launched
NOT_YET = 5
#: a land that found the runtime without this session's set-up: nothing landed, nothing launched
NEEDS_SETUP = 6

#: runs on the runtime (standard library only: the set-up may be missing): checks each zip, then writes its
#: members under their names (a temporary name first) and checks each one again. A land that waited beside
#: the copy leaves the zip a minute (renamed ``.landed``): the server answers the copy's request only after it
#: has saved the file, by reading it back, and a zip removed at once turns that answer into a 404
_LAND_SCRIPT = """\
import hashlib,json,os,sys,zipfile,base64,time
m=json.loads(base64.b64decode(sys.argv[1]))
k=m.get('marker')
if k:
    try:h=json.load(open(k['ready'])) if os.path.isfile(k['init']) else {}
    except Exception:h={}
    if h.get('bundle')!=k['bundle'] or any(not set(v)<=set(h.get(n,[])) for n,v in k['want'].items()):
        print('LANDED_NEEDS_SETUP',flush=True);sys.exit(6)
t=time.time()+m.get('wait',0)
while not all(os.path.isfile(z['path']) and os.path.getsize(z['path'])==z['size'] for z in m['zips']):
    if time.time()>t:
        if m.get('wait'):print('LANDED_NOT_YET',flush=True);sys.exit(5)
        break
    time.sleep(0.05)
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
    if m.get('wait'):os.rename(z['path'],z['path']+'.landed')
    else:os.unlink(z['path'])
if m.get('wait'):
    import subprocess as sp
    sp.Popen(['sh','-c','sleep 60; rm -f -- "$@"','tidy']+[z['path']+'.landed' for z in m['zips']],
             stdin=sp.DEVNULL,stdout=sp.DEVNULL,stderr=sp.DEVNULL,start_new_session=True)
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
    _setup_unknown = False
    _setup_timeout: float = 1800.0

    setup_travels = True
    #: the client can make calls side by side (a copy beside the land that waits for it)
    overlap_calls = False
    #: the runtime answered a call of this session: it is assigned, so calls side by side cannot assign two
    reached = False
    poll_wait: float
    #: the land commands already sent without a check (a retry of one checks what arrived)
    _folded: set[str]

    def run(self, command: str, *, timeout: float, abort: threading.Event | None = None) -> CommandResult:
        raise NotImplementedError  # provided by the transport (``abort``: stop waiting for the answer)

    def setup_on_next_batch(self, requirements: Requirements, *, timeout: float, unknown: bool = False) -> None:
        """The next batch's check reads the set-up marker, and its land command sets the runtime up if needed;
        where the set-up is ``unknown`` (a first batch, a lost runtime) that check comes before any copy."""
        from ..bundle import build_bundle

        self._bundle = self._bundle or build_bundle()
        self._travelling_setup = requirements
        self._setup_timeout = timeout
        self._setup_unknown = unknown

    def send_batch(self, files: Sequence[tuple[Path, str]], *, dirs: Sequence[str],
                   check_free: Callable[[int | None], None] | None, then: str, timeout: float,
                   ahead: str = "", need_bytes: int | None = None) -> CommandResult:
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

        forget: list[str] = []  # zips of a folded send that were not landed: removed by the check
        if self._may_fold(want, then):
            if check_free is not None:
                check_free(None)  # this machine's space; the runtime's is checked in the call itself (need_bytes)
            try:
                sent = self._send_folded([f for f in files if f[1] != bundle_remote], want, dirs, need_bytes, then,
                                         ahead, setup, deadline=deadline)
            except CallRefusedError as exc:  # e.g. the copy came before the folder it goes to (a recycled runtime)
                log.info("the batch's copy was refused (%s); checking the runtime and sending again", exc)
                sent = None
            said = sent.first.output if sent is not None else ""
            if sent is not None and check_free is not None:  # refuses the batch when the runtime is short of space
                check_free(next((free_kib(line[2:]) for line in said.splitlines() if line.startswith("D ")), None))
            if sent is not None and "LANDED_NEEDS_SETUP" not in said.split():
                self._travelling_setup = None
                return sent.result
            if sent is not None:
                log.info("the runtime lacks this session's set-up (recycled?): checking it and sending it")
                forget = [z["path"] for z in sent.zips]
        have, free, marker = self._check(list(want), dirs, setup is not None, ahead=self._gated(ahead, setup),
                                         timeout=timeout, forget=forget)
        if check_free is not None:
            check_free(free)
        needs_setup = setup is not None and not self._marker_says(marker, *self._spec_and_bundle(setup))
        todo = [(local, remote) for local, remote in files if have.get(remote) != want[remote]
                and (remote != bundle_remote or needs_setup)]
        small = [(lo, re) for lo, re in todo if want[re][0] <= self.copy_piece_bytes]
        for local, remote in todo:
            if (local, remote) not in small:
                self._put_in_pieces(local, remote, want[remote], deadline=deadline)
        result = self._copy_and_land(small, want, setup if needs_setup else None, then, deadline=deadline).result
        self._travelling_setup = None
        return result

    def _may_fold(self, want: dict[str, tuple[int, str]], then: str) -> bool:
        """Whether this send may go without its check call: a batch's first try (a retry checks what arrived),
        on a runtime this session already reached and set up (not lost since), of files that all go in zips."""
        if not (self.overlap_calls and self.reached and want) or self._setup_unknown or then in self._folded:
            return False
        if sum(size for size, _ in want.values()) > self.copy_piece_bytes:
            return False
        self._folded.add(then)
        return True

    def _send_folded(self, files: list[tuple[Path, str]], want: dict[str, tuple[int, str]], dirs: Sequence[str],
                     need_bytes: int | None, then: str, ahead: str, setup: Requirements | None, *,
                     deadline: float) -> Sent:
        """The check, the land and ``then`` in one call beside the copy: the folders made, the free space read
        (the batch refused there, nothing landed, when it is short of ``need_bytes``), the standby started, the
        set-up marker checked (nothing landed when it is missing: the careful path sends the set-up), then the
        zips awaited, checked and landed."""
        prelude = [self._make_folders(dirs, [r for _, r in files]),
                   f"d=$(df -Pk -- {sh(self.remote_root)} | tail -n 1); printf 'D %s\\n' \"$d\""]
        if need_bytes:
            need_kib = -(-need_bytes // 1024)
            prelude.append(f"f=$(printf '%s\\n' \"$d\" | awk '{{print $4}}'); "
                           f"[ -z \"$f\" ] || [ \"$f\" -ge {need_kib} ] || {{ echo CGPUKIT_NOSPACE; exit 0; }}")
        if ahead:
            prelude.append(self._gated(ahead, setup))
        marker = None
        if setup is not None:
            wanted, bundle_sha = self._spec_and_bundle(setup)
            marker = {"init": posixpath.join(self.home, "lib", "cgpu_kit", "__init__.py"),
                      "ready": posixpath.join(self.home, "ready.json"), "bundle": bundle_sha,
                      "want": {k: sorted(getattr(wanted, k)) for k in ("pip", "apt", "modules", "programs", "pip_no_deps")}}
        sent = self._copy_and_land(files, want, None, then, deadline=deadline, prelude=prelude, marker=marker,
                                   tag=f"-f{secrets.token_hex(4)}")  # never landed by a land of another try
        if "CGPUKIT_NOSPACE" in sent.first.output.split():
            paths = [z["path"] for z in sent.zips]
            try:  # the copy arrived for nothing (a copy not landed for the set-up is landed by the careful path)
                self.run(f"rm -f -- {sh(*paths)}", timeout=60)
            except CgpuKitError as exc:
                log.info("could not remove a copy that was not landed: %s", exc)
        return sent

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

    def _make_folders(self, dirs: Sequence[str], remotes: Sequence[str]) -> str:
        """The shell line that makes ``dirs``, the remote root, the incoming folder and ``remotes``' folders."""
        folders = {*dirs, self.remote_root, posixpath.join(self.home, "incoming"), *map(posixpath.dirname, remotes)}
        return f"mkdir -p -- {sh(*sorted(folders))} || exit 1"

    def _check(self, remotes: list[str], dirs: Sequence[str], marker: bool, *, ahead: str = "",
               timeout: float, forget: Sequence[str] = ()) -> tuple[dict[str, tuple[int, str]], int | None, str | None]:
        lines = [self._make_folders(dirs, remotes), *([ahead] if ahead else []),
                 *([f"rm -f -- {sh(*forget)}"] if forget else []),
                 f"printf 'D %s\\n' \"$(df -Pk -- {sh(self.remote_root)} | tail -n 1)\""]
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

    def _build_zips(self, files: list[tuple[Path, str]], want: dict[str, tuple[int, str]],
                    tmp: Path, tag: str = "") -> list[tuple[Path, dict]]:
        """Stored zips of at most ``copy_piece_bytes`` each in ``tmp``, each with its manifest entry (where it
        goes on the runtime, its size and sha256, and where each member goes)."""
        groups: list[list[tuple[Path, str]]] = []
        size = 0
        for local, remote in sorted(files, key=lambda f: want[f[1]][0]):
            if not groups or size + want[remote][0] > self.copy_piece_bytes:
                groups.append([])
                size = 0
            groups[-1].append((local, remote))
            size += want[remote][0]
        zips = []
        for number, group in enumerate(groups):
            path = tmp / f"batch{number}.zip"
            members = []
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
                for index, (local, remote) in enumerate(group):
                    z.write(local, f"f{index:05d}")
                    members.append({"member": f"f{index:05d}", "target": remote, "size": want[remote][0],
                                    "sha256": want[remote][1]})
            digest = file_sha256(path)
            target = posixpath.join(self.home, "incoming", f"batch-{digest[:16]}{tag}.zip")
            zips.append((path, {"path": target, "size": path.stat().st_size, "sha256": digest, "members": members}))
        return zips

    def _copy_and_land(self, files: list[tuple[Path, str]], want: dict[str, tuple[int, str]],
                       setup: Requirements | None, then: str, *, deadline: float, prelude: Sequence[str] = (),
                       marker: dict | None = None, tag: str = "") -> Sent:
        """``files`` copied in zips (one client copy each) and landed (verified) by one command that then runs
        ``then``; where the client allows, the copies go beside that command, which waits for them. ``marker``:
        the set-up marker that must be there first (else nothing is landed: ``LANDED_NEEDS_SETUP``)."""
        with tempfile.TemporaryDirectory(prefix="cgpu_kit_send_") as tmp:
            zips = self._build_zips(files, want, Path(tmp), tag)
            entries = [entry for _, entry in zips]
            timeout = max(deadline - time.monotonic(), 60.0)
            if not (self.overlap_calls and zips):
                for path, entry in zips:
                    self._send_one(path, entry["path"], deadline=deadline)
                    log.info("sent %d file(s) in one copy (%.1f MB)", len(entry["members"]), entry["size"] / 1e6)
                first = self._land(entries, setup, then, timeout=timeout, prelude=prelude, marker=marker)
                return Sent(first, first, entries)
            copies = Copies(self, zips, deadline)
            try:
                first = self._land(entries, setup, then, timeout=timeout, prelude=prelude, marker=marker,
                                   wait=min(self.poll_wait, timeout), abort=copies.failed)
            except ConnectionLostError:  # (an interrupt does not wait for the copy: it only goes on)
                copies.finish()  # a copy's own error says more (and a refusal is not retried)
                raise
            copies.finish()
            if first.exit_code != NOT_YET or "LANDED_NOT_YET" not in first.output.split():
                return Sent(first, first, entries)
            log.info("the land waited for the copy in vain; landing again now that it is done")
            return Sent(self._land(entries, setup, then, timeout=max(deadline - time.monotonic(), 60.0)), first, entries)

    def _land(self, zips: list[dict], setup: Requirements | None, then: str, *, timeout: float,
              prelude: Sequence[str] = (), wait: float = 0.0, abort: threading.Event | None = None,
              marker: dict | None = None) -> CommandResult:
        """``prelude``, then the zips checked and landed (waiting up to ``wait`` s for them to arrive), the set-up
        started where it is missing, and ``then``: one call."""
        parts = list(prelude)
        if zips:
            script = base64.b64encode(_LAND_SCRIPT.encode()).decode()
            manifest = base64.b64encode(json.dumps({"zips": zips, "wait": wait, "marker": marker}).encode()).decode()
            parts.append(sh(self.python, "-c", "import base64,sys;exec(base64.b64decode(sys.argv.pop(1)))", script,
                            manifest) + f"; s=$?; case $s in 0) ;; {NOT_YET}|{NEEDS_SETUP}) exit $s;; *) exit {LANDED};; esac")
        if setup is not None:
            bundle = self._bundle
            _, encoded = self._spec(setup)
            helper = sh(self.python, posixpath.join(self.home, "bundle.zip"), "setup", self.home, bundle.sha256, encoded)
            parts.append(f"s=$({helper}); printf '%s\\n' \"$s\"; "
                         "printf '%s\\n' \"$s\" | grep -q '^CGPUKIT_SETUP .*\"state\": \"ready\"' || exit 0")
        parts.append(then)
        result = self.run("; ".join(parts), timeout=timeout, **({"abort": abort} if abort is not None else {}))
        words = result.output.split()
        if "CGPUKIT_NOSPACE" in words or (result.exit_code in (NOT_YET, NEEDS_SETUP) and
                                          ("LANDED_NOT_YET" in words or "LANDED_NEEDS_SETUP" in words)):
            return result  # nothing landed: refused for its size, its zips not there yet, or the set-up missing
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

