"""Downloads through ``cgpu run``, which has no download command: verified base64 chunks that resume.

The runtime prints the file's size and sha256, then chunks of ``get_chunk_bytes`` as base64 in 76-character
lines (one long line is 8x slower through cgpu's terminal), each framed with its length and sha256. Verified
chunks are written into ``.NAME.partial`` (a local file) whose progress survives a broken call, so a retry
resumes at the first missing chunk; the file is renamed into place when the whole file's sha256 matches.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from ..exceptions import CallTimeoutError, ConnectionLostError, RemoteCommandError, RuntimeLostError
from ..util import file_sha256, write_json
from ._shell import absolute
from .base import CommandResult, sh

log = logging.getLogger(__name__)

#: runs on the runtime: prints the file's size and sha256, then chunks [start, start+count) as base64
_GET_SCRIPT = """\
import base64,hashlib,os,sys
p,start,count,cb=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4])
try:
    f=open(p,'rb')
except OSError as e:
    print('NOFILE',e.errno,int(os.path.isdir(os.path.dirname(p))),flush=True);sys.exit(2)
with f:
    h=hashlib.sha256()
    for b in iter(lambda:f.read(1<<20),b''):h.update(b)
    size=f.tell()
    print('FILE',size,h.hexdigest(),flush=True)
    for i in range(start,min((size+cb-1)//cb,start+count)):
        f.seek(i*cb);d=f.read(cb)
        sys.stdout.write('CHUNK %d %d %s\\n'%(i,len(d),hashlib.sha256(d).hexdigest()))
        sys.stdout.write(base64.encodebytes(d).decode())
        sys.stdout.write('END %d\\n'%i);sys.stdout.flush()
"""


class Downloads:
    """The download half of :class:`~cgpu_kit.transports.cgpu.CgpuTransport` (a mixin)."""

    python: str
    get_chunk_bytes: int
    get_chunks_per_call: int

    def run(self, command: str, *, timeout: float) -> CommandResult:  # provided by the transport
        raise NotImplementedError

    def get(self, remote: str, local: Path, *, timeout: float) -> None:
        """Download in verified chunks into ``.NAME.partial``; progress survives a broken call (and its retry)."""
        remote = absolute(remote)
        deadline = time.monotonic() + timeout
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial")
        state_file = local.with_name(f".{local.name}.partial.json")
        state = _load_state(state_file, remote, self.get_chunk_bytes)
        if not partial.exists() or partial.stat().st_size < state["done"] * self.get_chunk_bytes:
            state = _load_state(None, remote, self.get_chunk_bytes)
        script = base64.b64encode(_GET_SCRIPT.encode()).decode()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CallTimeoutError(f"downloading {remote} did not finish within {timeout:.0f}s")
            cmd = sh(self.python, "-c", "import base64,sys;exec(base64.b64decode(sys.argv.pop(1)))", script,
                     remote, str(state["done"]), str(self.get_chunks_per_call), str(self.get_chunk_bytes))
            try:
                result = self.run(cmd, timeout=remaining)
            except ConnectionLostError as exc:
                self._take_chunks(exc.output, state, partial, state_file)
                raise
            if result.exit_code == 2 and "NOFILE" in result.output:
                if re.search(r"^NOFILE \d+ 0$", result.output, re.M):
                    raise RuntimeLostError(f"{remote}: neither the file nor its folder is on the runtime", output=result.output)
                raise RemoteCommandError(f"{remote}: no such file on the runtime", exit_code=2, output=result.output)
            result.check(f"reading {remote}")
            before = state["done"]
            if not self._take_chunks(result.output, state, partial, state_file):
                raise ConnectionLostError(f"downloading {remote}: the answer had no file header", output=result.output[-2000:])
            if state["size"] is not None and state["done"] * self.get_chunk_bytes >= state["size"]:
                break
            if state["done"] <= before:
                raise ConnectionLostError(f"downloading {remote}: no chunk arrived intact", output=result.output[-2000:])
        with open(partial, "r+b" if partial.exists() else "wb") as f:
            f.truncate(state["size"])
        if file_sha256(partial) != state["sha256"]:
            partial.unlink(missing_ok=True)
            state_file.unlink(missing_ok=True)
            raise ConnectionLostError(f"downloading {remote}: the whole file's sha256 does not match; starting over")
        os.replace(partial, local)
        state_file.unlink(missing_ok=True)

    def _take_chunks(self, output: str, state: dict, partial: Path, state_file: Path) -> bool:
        """Append the verified chunks of ``output`` that come next; return whether the file header was seen."""
        header = False
        chunk: tuple[int, int, str] | None = None
        data: list[str] = []
        for line in output.splitlines():
            words = line.split()
            if words[:1] == ["FILE"] and len(words) == 3:
                size, digest = int(words[1]), words[2]
                if (state["size"], state["sha256"]) not in ((None, None), (size, digest)):
                    log.info("%s changed on the runtime; downloading it again from the start", state["remote"])
                    state.update(done=0)
                    partial.unlink(missing_ok=True)
                state.update(size=size, sha256=digest)
                header = True
            elif words[:1] == ["CHUNK"] and len(words) == 4:
                chunk, data = (int(words[1]), int(words[2]), words[3]), []
            elif words[:1] == ["END"] and chunk is not None:
                index, length, digest = chunk
                chunk = None
                try:
                    body = base64.b64decode("".join(data), validate=True)
                except ValueError:
                    continue
                if index != state["done"] or len(body) != length or hashlib.sha256(body).hexdigest() != digest:
                    continue
                with open(partial, "r+b" if partial.exists() else "wb") as f:
                    f.truncate(index * self.get_chunk_bytes)
                    f.seek(index * self.get_chunk_bytes)
                    f.write(body)
                state["done"] = index + 1
            elif chunk is not None:
                data.append(line.strip())
        if state["size"] is not None:
            write_json(state_file, state)
        return header

def _load_state(path: Path | None, remote: str, chunk_bytes: int) -> dict:
    fresh = {"remote": remote, "chunk_bytes": chunk_bytes, "size": None, "sha256": None, "done": 0}
    if path is None or not path.is_file():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return fresh
    if state.get("remote") != remote or state.get("chunk_bytes") != chunk_bytes:
        return fresh
    return {**fresh, **state}
