"""``python -m cgpu_kit.runtime.status WORK_DIR [SINCE] [--wait S] [--inline BYTES] [--skip A,B]``: one JSON
line saying how a batch stands.

``state`` is ``absent`` (no work folder: a recycled runtime), ``uploaded`` (never launched), ``running``,
``finished``, or ``dead`` (launched, not running, no status: the driver was killed). ``results`` holds the
item records after the first ``SINCE``; ``ready`` the output parts that can be fetched, with size and sha256.

Every call through a Colab client costs seconds, so a poll can do more than look: ``--wait`` holds the answer
up to S seconds while the batch runs with no new chunk (chunks named in ``--skip`` are home already), and
``--inline`` prints, before the JSON line, new chunks and, once the batch has finished, its logs, as
``INLINE NAME SIZE SHA256``, base64 in 76-character lines and ``INLINE_END NAME``, up to BYTES in all; a file
that does not fit is fetched with the transport's own download, and the logs missing on the runtime are
named in ``absent_logs`` so that nobody asks for them. ``--tidy``: a finished batch all of whose files went
inline is moved out of the way (``tidied``: where to), and the runtime removes it itself a few minutes later,
so the batch costs no call to remove it, while a file that came damaged can still be fetched from there.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import layout
from .tally import ResultsTally


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def status(work_dir: Path, since: int = 0, tally: ResultsTally | None = None) -> dict[str, Any]:
    """How the batch in ``work_dir`` stands, with its item records after the first ``since``. ``tally``: the
    batch's results as read by an earlier look (a poll that looks again), to take in only what is new."""
    if not work_dir.is_dir():
        return {"state": "absent"}
    out: dict[str, Any] = {}
    status_file = work_dir / layout.STATUS
    if status_file.exists():
        out.update(state="finished", **json.loads(status_file.read_text()))
    elif _alive(work_dir / layout.PID):
        out["state"] = "running"
    elif (work_dir / layout.PID).exists():
        out["state"] = "dead"
    else:
        out["state"] = "uploaded"
    progress = work_dir / layout.PROGRESS
    if progress.exists():
        try:
            out["progress"] = json.loads(progress.read_text())
        except json.JSONDecodeError:
            pass
    if tally is None or since < tally.keep_from:
        tally = ResultsTally(work_dir / layout.RESULTS, since)
    tally.read()
    out["results_count"] = tally.count
    if tally.item_seconds is not None:
        out["item_seconds"] = tally.item_seconds
    out["results"] = tally.records(since)
    ready = {}
    for meta in sorted((work_dir / layout.READY).glob("out_*.json")):
        try:
            ready[meta.stem + ".zip"] = json.loads(meta.read_text())
        except json.JSONDecodeError:
            continue
    out["ready"] = ready
    parts = work_dir / layout.PARTS
    out["parts"] = sorted(p.name for p in parts.glob("part_*.zip")) if parts.is_dir() else []
    return out


def _print_inline(name: str, path: Path) -> int:
    data = path.read_bytes()
    sys.stdout.write(f"INLINE {name} {len(data)} {hashlib.sha256(data).hexdigest()}\n")
    sys.stdout.write(base64.encodebytes(data).decode())
    sys.stdout.write(f"INLINE_END {name}\n")
    return len(data)


def inline(work_dir: Path, answer: dict[str, Any], skip: set[str], budget: int) -> bool:
    """Print new chunks, then (a finished batch) its logs, inline while they fit in ``budget`` bytes; whether
    all of them did."""
    wanted = [(f"{layout.READY}/{name}", work_dir / layout.READY / name)
              for name in sorted(answer["ready"]) if name not in skip]
    if answer["state"] == "finished":
        logs = (layout.EXECUTED, layout.RUNTIME_LOG, layout.RESULTS, layout.STATUS)
        answer["absent_logs"] = [name for name in logs if not (work_dir / name).is_file()]
        wanted += [(name, work_dir / name) for name in logs if (work_dir / name).is_file()]
    complete = True
    for name, path in wanted:
        try:
            size = path.stat().st_size
            if size <= budget:
                budget -= _print_inline(name, path)
            else:
                complete = False
        except OSError:
            complete = False
    return complete


def tidy(work_dir: Path) -> str | None:
    """Move the finished batch's folder into the trash and have it removed :func:`layout.tidy_seconds` later by
    a process of its own; where it went, or None (left in place: the caller removes it as before)."""
    trash = work_dir.parent.joinpath(*layout.TRASH)
    try:
        trash.mkdir(parents=True, exist_ok=True)
        dest = trash / work_dir.name
        os.rename(work_dir, dest)
    except OSError:
        return None
    try:
        subprocess.Popen(["sh", "-c", 'sleep "$1"; rm -rf -- "$2"', "tidy", f"{layout.tidy_seconds():g}", str(dest)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError:
        pass  # the trash is emptied by nobody then: still out of the way of every later batch
    return str(dest)


#: once every item has its result, a waiting poll holds its news up to this long more for the batch's end (the
#: template's last cells, the notebook written, the status): one call then brings the last chunk and the end,
#: where returning at once would cost another call a second later
TAIL_SECONDS = 5.0


def _items_over(answer: dict[str, Any]) -> bool:
    """Whether every item of a running batch has its result (the loop is over; the end is near)."""
    progress = answer.get("progress") or {}
    return bool(progress.get("total")) and progress.get("finished", 0) >= progress["total"] and not progress.get("running")


def near_end(answer: dict[str, Any], seconds: float) -> bool:
    """Whether a running batch's items left would take ``seconds`` or less (the mean of its finished items,
    as many at once as are running now)."""
    progress, per_item = answer.get("progress") or {}, answer.get("item_seconds")
    if not (seconds > 0 and per_item and progress.get("total")):
        return False
    left = progress["total"] - progress.get("finished", 0)
    return left * per_item / max(1, len(progress.get("running") or [])) <= seconds


def wait_for_news(work_dir: Path, since: int, wait: float, skip: set[str], near: float = 0.0) -> dict[str, Any]:
    """The status once the batch is no longer running, a new chunk is ready, it is ``near`` seconds from its
    end (``near: true``), or ``wait`` seconds passed; news that comes once every item is over is held a little
    (:data:`TAIL_SECONDS`) for the batch's end."""
    deadline = time.monotonic() + wait
    tail: float | None = None
    tally = ResultsTally(work_dir / layout.RESULTS, since)
    while True:
        answer = status(work_dir, since, tally)
        running = answer["state"] == "running"
        if running and near_end(answer, near):
            answer["near"] = True
        news = not running or set(answer.get("ready", {})) - skip or answer.get("near")
        over = running and wait > 0 and _items_over(answer)
        if over and tail is None:
            tail = min(deadline, time.monotonic() + TAIL_SECONDS)
        if news and not (over and time.monotonic() < tail) or time.monotonic() >= deadline:
            return answer
        time.sleep(0.05 if over else min(0.5, max(deadline - time.monotonic(), 0.01)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cgpu_kit.runtime.status")
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("since", type=int, nargs="?", default=0)
    ap.add_argument("--wait", type=float, default=0.0)
    ap.add_argument("--inline", type=int, default=0)
    ap.add_argument("--skip", default="")
    ap.add_argument("--tidy", action="store_true")
    ap.add_argument("--near", type=float, default=0.0)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    skip = {name for name in args.skip.split(",") if name}
    answer = wait_for_news(args.work_dir, args.since, args.wait, skip, args.near)
    if args.inline > 0 and answer["state"] != "absent":
        complete = inline(args.work_dir, answer, skip, args.inline)
        if complete and args.tidy and answer["state"] == "finished":
            answer["tidied"] = tidy(args.work_dir)
    print(json.dumps(answer, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
