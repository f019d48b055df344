"""The item loop that a template runs on the runtime.

It unpacks the uploaded parts, builds the job type's processor once, and processes items side by side up to
the processor's limit. Each item has its own try/except and its own timeout; as it finishes, its result is
appended to ``results.jsonl`` and ``progress.json`` is rewritten, so a poller sees progress and a restarted
run skips what is done. When every item of a part has a result, that part's outputs are zipped into
``ready/out_NNNN.zip`` for the local side to fetch while the rest goes on.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .. import batch
from ..util import append_jsonl, file_sha256, read_jsonl, write_json
from . import layout
from .context import ItemCancelled, ItemContext, ItemError, RuntimeItem
from .processor import Processor, load_processor

log = logging.getLogger("cgpu_kit.runtime")


def load_items(work_dir: Path) -> tuple[list[RuntimeItem], dict[str, Any]]:
    """Unpack every part once and return the items of all parts with the first manifest's header."""
    items: list[RuntimeItem] = []
    header: dict[str, Any] = {}
    in_dir = work_dir / layout.INPUTS
    for part in sorted((work_dir / layout.PARTS).glob("part_*.zip")):
        manifest = batch.read_manifest(part)
        header = header or {k: v for k, v in manifest.items() if k != "items"}
        marker = in_dir / f"{part.stem}.unpacked"
        if not marker.exists():
            batch.safe_extract(part, in_dir)
            (in_dir / batch.MANIFEST).unlink(missing_ok=True)
            marker.touch()
        for rec in manifest["items"]:
            path = in_dir / rec["file"]
            if rec.get("path") and not path.is_symlink():  # a part by reference: the input where it is, linked
                in_dir.mkdir(parents=True, exist_ok=True)
                path.unlink(missing_ok=True)
                os.symlink(rec["path"], path)
            items.append(RuntimeItem(rec["item_id"], rec["name"], path, rec["part"], rec.get("probe", {}),
                rec.get("sha256", ""), rec.get("path", "")))
    return items, header


class BatchRun:
    def __init__(
        self, processor: str, work_dir: Path, params: dict[str, Any], item_timeout: float, workers: int,
        chunk_seconds: float = 30.0, chunk_bytes: int = 256 << 20, job_type: str = "",
    ) -> None:
        self.processor = processor
        self.chunk_seconds = chunk_seconds
        self.chunk_bytes = chunk_bytes
        self._oldest_unzipped = 0.0
        self.job_type = job_type or processor
        self.work_dir = work_dir
        self.params = params
        self.item_timeout = item_timeout
        self.workers = workers
        self._lock = threading.Lock()
        self.results: dict[str, dict[str, Any]] = {}
        self.running: set[str] = set()

    def cancelled(self) -> bool:
        return (self.work_dir / layout.CANCEL).exists()

    def run(self) -> list[dict[str, Any]]:
        items, _ = load_items(self.work_dir)
        for rec in read_jsonl(self.work_dir / layout.RESULTS):
            if rec.get("status") == "done" and self._outputs_intact(rec):
                self.results[rec["item_id"]] = rec
        todo = [i for i in items if i.item_id not in self.results]
        self.total = len(items)
        log.info("%s: %d items, %d already done", self.job_type, len(items), len(items) - len(todo))
        self._write_progress()
        self._zip_ready_parts(items)
        if todo:
            processor_cls = load_processor(self.processor)
            processor = processor_cls(self.params)
            try:
                workers = max(1, min(self.workers or (os.cpu_count() or 1), processor.max_workers, len(todo)))
                if workers == 1:
                    for item in todo:
                        self._run_item(processor, item, items)
                else:
                    cores = max(1, (os.cpu_count() or 1) // workers)
                    log.info("%s: %d items side by side, %d core%s each", self.job_type, workers, cores,
                             "" if cores == 1 else "s")
                    with cf.ThreadPoolExecutor(workers) as pool:
                        list(pool.map(lambda it: self._run_item(processor, it, items, cores), todo))
            finally:
                processor.close()
        self._zip_ready_parts(items, final=True)
        return [self.results[i.item_id] for i in items if i.item_id in self.results]

    def _outputs_intact(self, rec: dict[str, Any]) -> bool:
        out = self.work_dir / layout.OUTPUTS / rec["item_id"]
        return all((out / name).is_file() for name in rec.get("outputs", []))

    def _run_item(self, processor: Processor, item: RuntimeItem, items: list[RuntimeItem], cores: int | None = None) -> None:
        rec: dict[str, Any] = {"item_id": item.item_id, "name": item.name, "part": item.part}
        if self.cancelled():
            rec.update(status="cancelled", error="cancelled before it started", outputs=[])
            self._finish(rec, items, persist=False)
            return
        with self._lock:
            self.running.add(item.item_id)
            self._write_progress()
        out_dir = self.work_dir / layout.OUTPUTS / item.item_id
        ctx = ItemContext(item, out_dir, self.params, timeout=self.item_timeout, cancelled=self.cancelled, logger=log,
                          cores=cores)
        started = time.monotonic()
        try:
            if not item.path.is_file():
                raise ItemError(f"its input is no longer at {item.source}" if item.source else
                                "its input did not arrive on the runtime")
            if item.sha256 and file_sha256(item.path) != item.sha256:
                raise ItemError("its input changed after it was checked; run the batch again" if item.source else
                                "its input arrived damaged on the runtime (sha256 mismatch); run the batch again")
            outputs = processor.process(ctx)
            names = []
            for path in outputs:
                path = Path(path)
                if not path.is_file() or path.stat().st_size == 0:
                    raise ItemError(f"the processor reported {path.name} but wrote nothing there")
                names.append(path.relative_to(out_dir).as_posix())
            rec.update(status="done", outputs=names, error=None)
        except ItemCancelled:
            rec.update(status="cancelled", error="cancelled while running", outputs=[])
        except ItemError as exc:
            rec.update(status="failed", error=str(exc), outputs=[])
        except Exception as exc:  # an item never stops the batch
            log.debug("item %s failed:\n%s", item.item_id, traceback.format_exc())
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}", outputs=[])
        ctx.timings["total"] = round(time.monotonic() - started, 3)
        rec.update(timings=ctx.timings, metadata=ctx.metadata, stderr_tail="\n".join(ctx.stderr_tail))
        if rec["status"] == "done":
            rec["sha256"] = {name: file_sha256(out_dir / name) for name in rec["outputs"]}
        self._finish(rec, items, persist=rec["status"] != "cancelled")
        log.info("%s %s: %s%s", item.item_id, item.name, rec["status"], f" ({rec['error']})" if rec.get("error") else "")

    def _finish(self, rec: dict[str, Any], items: list[RuntimeItem], *, persist: bool) -> None:
        with self._lock:
            self.running.discard(rec["item_id"])
            self.results[rec["item_id"]] = rec
            if persist:
                append_jsonl(self.work_dir / layout.RESULTS, rec)
            self._zip_ready_parts(items)
            self._write_progress()

    def _write_progress(self) -> None:
        counts: dict[str, int] = {}
        for rec in self.results.values():
            counts[rec["status"]] = counts.get(rec["status"], 0) + 1
        write_json(self.work_dir / layout.PROGRESS, {
            "total": getattr(self, "total", 0), "finished": len(self.results), "counts": counts,
            "running": sorted(self.running), "time": time.time(),
        })

    def _zip_ready_parts(self, items: list[RuntimeItem], *, final: bool = False) -> None:
        """Zip finished items not yet zipped into the next ``ready/out_NNNN.zip`` (called under the lock).

        A chunk is cut when the oldest unzipped result is ``chunk_seconds`` old, when the unzipped outputs
        reach ``chunk_bytes``, or at the end of the run (``final``): results come back while the batch goes
        on, and a batch costs a number of downloads bounded by its duration and size, not its item count.
        """
        ready_dir = self.work_dir / layout.READY
        ready_dir.mkdir(parents=True, exist_ok=True)
        index = ready_dir / "index.jsonl"
        zipped = {i for rec in read_jsonl(index) for i in rec["items"]}
        pending = [r for r in self.results.values() if r["item_id"] not in zipped and r["status"] != "cancelled"]
        if not pending:
            return
        size = sum(
            (self.work_dir / layout.OUTPUTS / r["item_id"] / n).stat().st_size
            for r in pending for n in r.get("outputs", [])
        )
        age = time.monotonic() - self._oldest_unzipped if self._oldest_unzipped else 0.0
        if not (final or size >= self.chunk_bytes or age >= self.chunk_seconds):
            if not self._oldest_unzipped:
                self._oldest_unzipped = time.monotonic()
            return
        chunk = len(read_jsonl(index))
        files = [
            (self.work_dir / layout.OUTPUTS / r["item_id"] / n, f"{r['item_id']}/{n}")
            for r in pending for n in r.get("outputs", [])
        ]
        dest = ready_dir / layout.ready_name(chunk)
        batch.pack_files(files, dest, manifest={"chunk": chunk, "results": pending})
        write_json(dest.with_suffix(".json"), {"sha256": file_sha256(dest), "size": dest.stat().st_size})
        append_jsonl(index, {"chunk": chunk, "items": [r["item_id"] for r in pending]})
        self._oldest_unzipped = 0.0


def run_batch(
    processor: str, work_dir: str | Path, params: dict[str, Any], item_timeout: float, workers: int = 0,
    chunk_seconds: float = 30.0, chunk_bytes: int = 256 << 20, job_type: str = "",
) -> list[dict[str, Any]]:
    """Process every item of the batch in ``work_dir`` with ``processor`` (``"module:Class"``); return the
    per-item records."""
    return BatchRun(processor, Path(work_dir), params, item_timeout, workers, chunk_seconds, chunk_bytes,
                    job_type).run()
