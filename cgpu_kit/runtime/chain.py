"""Several job types one after the other on each item, on the runtime: one upload, one download.

Each step's processor is built once per batch (with its own resolved parameters, which the local side wrote
into the job file with the processors' ``"module:Class"`` names: the runtime imports no job types). For
each item, step N reads step N-1's media output from ``<work>/steps/<item>/<N>-<step>/``; a finished step
leaves a ``done.json`` there, so a run resumed on the same runtime starts an unfinished item at its first
unfinished step. The last step's outputs are the item's; with ``keep_steps`` the others' are delivered too,
as ``<stem>.<N>-<step><suffix>``. A failing step fails the item with the step named.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..media import probe
from ..params import Param, ParamSet
from .context import ItemContext, ItemError, RuntimeItem
from .processor import Processor, load_processor

#: suffixes a step's output may have to be the next step's input
MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".m4v", ".webm", ".avi", ".png", ".jpg", ".jpeg", ".webp", ".wav", ".flac",
                  ".mp3", ".m4a", ".aac", ".ogg"}

CHAIN_PARAMS = ParamSet([
    Param("steps", [], "the job types to run one after the other on each item, e.g. stabilize,upscale,encode",
          type=list),
    Param("step_params", "{}", "each step's parameters as JSON, {\"step\": {\"name\": value}}", type=str),
    Param("keep_steps", False, "also deliver each step's output before the last (<stem>.<N>-<step>.<ext>)"),
    Param("processors", [], "filled in by cgpu_kit: each step's runtime processor, \"module:Class\"", type=list),
])


class ChainProcessor(Processor):
    params_spec = CHAIN_PARAMS

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        steps, targets = params["steps"], params["processors"]
        given_all = json.loads(params["step_params"] or "{}")
        if not steps or len(steps) != len(targets):
            raise ValueError(f"a chain needs its steps and their processors, got {steps} and {targets}")
        self.steps: list[tuple[str, Processor]] = []
        for name, target in zip(steps, targets):
            cls = load_processor(target)
            given = given_all.get(name, {})
            resolved = cls.params_spec.resolve(given, job_type=name) if cls.params_spec is not None else given
            self.steps.append((name, cls(resolved)))
        self.max_workers = min(p.max_workers for _, p in self.steps)

    def close(self) -> None:
        for _, proc in self.steps:
            proc.close()

    def process(self, ctx: ItemContext) -> list[Path]:
        src, info = ctx.item.path, dict(ctx.item.probe)
        root = ctx.out_dir.parent.parent / "steps" / ctx.item.item_id
        outputs: list[Path] = []
        ctx.metadata["steps"] = {}
        last = len(self.steps)
        for n, (name, proc) in enumerate(self.steps, 1):
            folder = root / f"{n}-{name}"
            done = folder / "done.json"
            record = json.loads(done.read_text()) if done.exists() else None
            if record and all((folder / o).is_file() for o in record["outputs"]):
                made = [folder / o for o in record["outputs"]]
                ctx.metadata["steps"][name] = {**record.get("metadata", {}), "resumed": True}
            else:
                made = self._run_step(ctx, n, name, proc, folder, src, info)
            if n == last:
                outputs += [self._deliver(ctx, path, "") for path in made]
                break
            media = next((p for p in made if p.suffix.lower() in MEDIA_SUFFIXES), None)
            if media is None:
                raise ItemError(f"step {n} ({name}) made no media for the next step ({', '.join(p.name for p in made)}); "
                                "put it last in the chain")
            if self.params["keep_steps"]:
                outputs += [self._deliver(ctx, path, f".{n}-{name}", copy=True) for path in made]
            src, info = media, probe(media).to_dict()
        return outputs

    def _run_step(self, ctx: ItemContext, n: int, name: str, proc: Processor, folder: Path, src: Path,
                  info: dict[str, Any]) -> list[Path]:
        if folder.exists():
            shutil.rmtree(folder)
        item = RuntimeItem(ctx.item.item_id, ctx.item.name, src, ctx.item.part, info, "")
        sub = ItemContext(item, folder, proc.params, timeout=ctx.remaining(), cancelled=ctx.cancelled, logger=ctx.log,
                          cores=ctx.cores)
        started = time.monotonic()
        try:
            made = proc.process(sub)
        except ItemError as exc:
            raise ItemError(f"step {n} ({name}) failed: {exc}") from exc
        except Exception as exc:
            raise ItemError(f"step {n} ({name}) failed: {type(exc).__name__}: {exc}") from exc
        finally:
            ctx.stderr_tail.extend(sub.stderr_tail)
            ctx.timings[name] = round(time.monotonic() - started, 3)
        ctx.metadata["steps"][name] = sub.metadata
        (folder / "done.json").write_text(json.dumps({"outputs": [p.relative_to(folder).as_posix() for p in made],
                                                      "metadata": sub.metadata}, default=str))
        return made

    @staticmethod
    def _deliver(ctx: ItemContext, path: Path, tag: str, *, copy: bool = False) -> Path:
        """``output<suffix>`` of a step as the item's ``output<tag><suffix>`` (the suffix after ``output``)."""
        suffix = path.name[len("output"):] if path.name.startswith("output") else "." + path.name
        dest = ctx.output(tag + suffix)
        (shutil.copyfile if copy else shutil.move)(path, dest)
        return dest

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        from ..samples import make_shaky_clip

        return [make_shaky_clip(dest / "shaky sample.mp4", frames=30, width=160, height=120, jitter=8)]
