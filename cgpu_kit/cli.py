"""``cgpu-kit``: a thin command line over the library.

Each job type of the registry (cgpu_kit/registry.py, plugins included) is a subcommand whose options come
from that job type's parameter list, so the CLI, the
library and the widgets always agree on names, defaults and bounds. Exit status: 0 when every item
succeeded (or was already done), 1 when some failed, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cluster import is_dask_backend, place_scheduler, scheduler_address
from .exceptions import CgpuKitError, ParameterError, describe_failure
from .manager import CGPUJobManager
from .params import Param, check_number
from .registry import BUILTIN, available, job_class, load
from .results import ItemResult, ItemStatus, JobResult, JobStatus
from .runtimes import parse_runtimes
from .samples import sample_inputs
from .transports import get_transport

log = logging.getLogger("cgpu_kit.cli")

def _add_param(parser: argparse.ArgumentParser, p: Param) -> None:
    flag = "--" + p.name.replace("_", "-")
    default_text = ",".join(p.default) if isinstance(p.default, (list, tuple)) else p.default
    help_text = f"{p.help} (default: {default_text}; {p.describe_bounds()})"
    if p.type is bool:
        parser.add_argument(flag, dest=p.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif p.choices is not None:
        parser.add_argument(flag, dest=p.name, type=p.type, choices=p.choices, default=None, help=help_text)
    elif p.type in (list, tuple):
        parser.add_argument(flag, dest=p.name, default=None, metavar="A,B", help=help_text)
    else:
        kind = p.type if p.type in (int, float) else str
        parser.add_argument(flag, dest=p.name, type=kind, default=None, help=help_text)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: a subcommand per job type, ``attach`` and ``report``. ``argv`` whose command is a built-in
    job type gets that one alone (no scan for plugins, no other job type imported: a quarter of a second off
    the start of every batch, whose standby driver waits for it); the full parser otherwise (help, plugins)."""
    parser = argparse.ArgumentParser(
        prog="cgpu-kit", description="GPU media jobs on whole batches of files, on Colab (through cgpu) or on this machine.",
    )
    parser.add_argument("--version", action="version", version=f"cgpu-kit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for job_type, cls in _job_types_for(argv).items():
        p = sub.add_parser(job_type, help=cls.describe(), description=(cls.__doc__ or "").strip())
        p.add_argument("inputs", nargs="*", metavar="FILE", help="input files (names are never interpreted by a shell)")
        p.add_argument("-o", "--out", required=True, help="output folder; outputs take the inputs' names")
        p.add_argument("--backend", default="local", help="where to run: local (this machine, the default), cgpu (a Colab "
                       "runtime through cgpu), colab (one through Google's colab client; colab:NAME for its session NAME) or dask "
                       "(a Dask cluster: dask:ADDRESS, or dask:local[:N] for N worker processes here)")
        p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="dask: the scheduler's address "
                       "(default: $DASK_SCHEDULER_ADDRESS or Dask's scheduler-address setting; see docs/dask.md)")
        p.add_argument("--runtime", dest="runtimes", action="append", default=None, metavar="SPEC",
                       help="a runtime to use, repeatable: several spread the batch (a faster one does more); "
                       "local, local:DIR, cgpu, cgpu:CONFIG_DIR (another Colab account), colab, colab:SESSION, dask, dask:ADDRESS, each "
                       "optionally followed by @REMOTE_ROOT (docs/runtimes.md); one --runtime is the same as --backend")
        p.add_argument("--remote-root", default=None,
                       help="folder of the runtime for job folders (cgpu, colab: /content, or $CGPU_KIT_REMOTE_ROOT)")
        p.add_argument("--session", default=None, help="colab: the session to run on, opened when it is not there "
                       "(default: a new one, cgpu-kit-XXXXXX)")
        p.add_argument("--colab-gpu", dest="colab_gpu", default=None, metavar="GPU", help="colab: the accelerator of a "
                       "session it opens: T4 (the default), L4, G4, A100, H100, or CPU for none (not upscale's --gpu)")
        p.add_argument("--keep-session", action="store_true", default=None,
                       help="colab: keep the session (and its runtime) when done; by default it is stopped")
        p.add_argument("--timeout", type=float, default=None,
                       help="seconds the whole job may take (default: sized to the job type and batch)")
        p.add_argument("--item-timeout", type=float, default=None, help="seconds each item may take")
        p.add_argument("--workers", type=int, default=0, help="items processed side by side on the runtime (0: as many as useful)")
        p.add_argument("--part-mb", type=float, default=None, help="upload the batch in parts of at most this many MB")
        p.add_argument("--force", action="store_true", help="redo items whose outputs are already in the output folder")
        p.add_argument("--overwrite", action="store_true",
                       help="replace files in the output folder that cgpu-kit did not write, or that changed since it "
                       "wrote them (by default they are kept and their item is skipped)")
        p.add_argument("--max-pixels", type=int, default=None,
                       help="refuse inputs with more pixels per frame than this (default: 8192x8192)")
        p.add_argument("--samples", action="store_true", help="add the bundled sample inputs (generated on first use)")
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary")
        p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
        group = p.add_argument_group(f"{job_type} parameters")
        for param in cls.params_spec:
            _add_param(group, param)
        p.set_defaults(job_type=job_type)
    p = sub.add_parser("attach", help="pick up a job that an earlier run left unfinished and fetch what it produced",
                       description="Wait for the batch of JOB_ID on its runtime and fetch its finished items. Running "
                       "the same command again in the same output folder does this too, then processes what is missing.")
    p.add_argument("job_id", metavar="JOB_ID", help="the job id printed by the run (also in OUT/_cgpu_kit/job_<id>)")
    p.add_argument("-o", "--out", default=None, help="the job's output folder (found automatically for jobs started by this user)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    p.set_defaults(job_type=None)
    p = sub.add_parser("report", help="make the report (report.html) of the last job in an output folder again",
                       description="Rebuild _cgpu_kit/job_<id>/report.html from the job's result.json and the outputs "
                       "in OUT_DIR: of the last job there, or of --job ID. Prints the report's path.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the output folder of a run")
    p.add_argument("--job", default=None, metavar="ID", help="the job id (default: the last job that finished there)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    p.set_defaults(job_type=None)
    return parser


def run_report_command(args: argparse.Namespace) -> int:
    from .report import rebuild

    print(rebuild(args.out_dir, args.job))
    return 0


def run_attach_command(args: argparse.Namespace) -> int:
    result = CGPUJobManager().attach(args.job_id, args.out)
    if result.metadata.get("finished_already"):
        print(f"job {args.job_id} finished already ({result.status.value}); nothing to pick up, nothing changed. "
              f"Its outputs are in {result.output_path}", file=sys.stderr)
        if args.json:
            json.dump(result.to_dict(), sys.stdout, indent=1, default=str)
            print()
        return 0 if result.status is JobStatus.COMPLETED else 1
    _print_summary(result)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1, default=str)
        print()
    return 0 if result.status is JobStatus.COMPLETED else 1


def _params_from(args: argparse.Namespace, cls: Any) -> dict[str, Any]:
    return {p.name: getattr(args, p.name) for p in cls.params_spec if getattr(args, p.name, None) is not None}


class _Progress:
    """A tqdm bar over the batch's items, advanced as each one finishes."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, job: Any, item: ItemResult) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{Path(item.input_path).name[:40]}: {item.status.value}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(result: JobResult, stream: Any = None) -> None:
    stream = stream or sys.stderr
    print(result.summary(), file=stream)
    for item in result.items:
        if item.status is ItemStatus.FAILED:
            print(f"  FAILED  {item.input_path!r}: {item.error}", file=stream)
        elif item.status is ItemStatus.CANCELLED:
            print(f"  CANCELLED  {item.input_path!r}", file=stream)
        elif item.status is ItemStatus.SKIPPED:
            print(f"  skipped {item.input_path!r}: {item.error or item.metadata.get('skipped', '')}", file=stream)
    if result.log_path:
        print(f"  log (executed notebook): {result.log_path}", file=stream)
    if result.report_path:
        print(f"  report: {result.report_path}", file=stream)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def run_job_command(args: argparse.Namespace) -> int:
    cls = job_class(args.job_type)
    if args.job_type == "chain" and not args.steps and args.inputs:  # `cgpu-kit chain stabilize,encode FILES`
        args.steps = args.inputs.pop(0)
    inputs: list[str] = list(args.inputs)  # as typed: "./a.mp4" stays "./a.mp4" in messages
    if args.samples:
        inputs += [str(p) for p in sample_inputs(args.job_type)]
    if not inputs:
        raise ParameterError(f"no inputs: give files to {args.job_type}, or --samples")
    backend, runtimes = place_scheduler(args.backend, args.runtimes, args.scheduler)
    if is_dask_backend(backend):  # no scheduler anywhere: refused before anything is checked or run
        scheduler_address(backend)
    if is_dask_backend(backend) or any(is_dask_backend(r) for r in runtimes or []):
        logging.getLogger("cgpu_kit.cluster").setLevel(logging.INFO)  # the dashboard link, where parts run
    session_options = {k: v for k, v in (("session", args.session), ("gpu", args.colab_gpu), ("keep_session", args.keep_session))
                       if v is not None}
    if session_options:  # options of one backend's sessions: that backend's transport takes them
        backend = get_transport(args.backend, remote_root=args.remote_root, **session_options)
    options: dict[str, Any] = dict(
        backend=backend, remote_root=args.remote_root, timeout=args.timeout, item_timeout=args.item_timeout,
        workers=args.workers, force=args.force, overwrite=args.overwrite,
    )
    if runtimes:  # a bad SPEC: exit 2, naming it and the accepted forms
        options["runtimes"] = parse_runtimes(runtimes)
    if args.part_mb is not None:
        options["part_bytes"] = int(check_number("--part-mb", args.part_mb) * 1e6) or 1
    if args.max_pixels is not None:
        options["max_pixels"] = args.max_pixels
    job = cls(inputs, args.out, params=_params_from(args, cls), **options)
    manager = CGPUJobManager()
    manager.prepare(job)
    if job.left_out:
        print(f"{len(job.left_out)} input(s) left out: they are outputs of cgpu-kit (inside {job.out_dir} "
              "or recorded as written by it)", file=sys.stderr)
    if not job.items:
        job.release_all()
        raise ParameterError(f"no inputs left to {args.job_type}: every input given is an output of cgpu-kit")
    to_run = len(job.pending)
    if to_run < len(job.items):
        print(f"{len(job.items) - to_run} of {len(job.items)} item(s) need no run (failed validation, duplicates "
              "or already done; see the summary)", file=sys.stderr)
    where = ", ".join(args.runtimes) if args.runtimes else args.backend
    progress = _Progress(to_run, not (args.quiet or args.json), f"{args.job_type} ({where})")
    job.on_item = progress
    interrupted = False
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = manager.run(job)
    except KeyboardInterrupt:
        result = manager.results.get(job.job_id) or job.finish("interrupted")
        interrupted = result.status is not JobStatus.COMPLETED
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    _print_summary(result)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1, default=str)
        print()
    if interrupted:
        print(f"interrupted: finished items were kept; run the same command again to do the rest "
              f"(or `cgpu-kit attach {job.job_id}` to fetch what the runtime finished)", file=sys.stderr)
        return 130
    return 0 if result.status is JobStatus.COMPLETED else 1


def _job_types_for(argv: Sequence[str] | None) -> dict[str, Any]:
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    if command in BUILTIN and not {"-h", "--help", "--version"} & set(argv[: list(argv).index(command)]):
        try:
            return {command: load(BUILTIN[command])}
        except ImportError:
            pass  # named with the others' warnings below
    return available()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "attach":
            return run_attach_command(args)
        if args.command == "report":
            return run_report_command(args)
        return run_job_command(args)
    except CgpuKitError as exc:
        print(f"cgpu-kit: error: {_cli_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before the batch started (while checking the inputs); outputs already finished are "
              "kept: run the same command again", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"cgpu-kit: error: {describe_failure(exc)}", file=sys.stderr)
        return 1


#: Python option names and the CLI flags that set them, so a refused value names the flag the user typed
_FLAGS = {"timeout": "--timeout", "item_timeout": "--item-timeout", "workers": "--workers",
          "part_bytes": "--part-mb", "max_pixels": "--max-pixels", "out_dir": "-o/--out", "runtimes": "--runtime"}


def _cli_text(exc: CgpuKitError) -> str:
    """The error as the CLI user should read it: option names spelled as flags."""
    text = str(exc)
    name = getattr(exc, "name", None)
    if isinstance(exc, ParameterError) and name in _FLAGS and not text.startswith("-"):
        text = f"{_FLAGS[name]}: {text}"
    elif isinstance(exc, ParameterError) and name and not name.startswith("-") and name not in _FLAGS and name != "inputs":
        flag = "--" + name.replace("_", "-")
        if flag not in text:
            text = f"{flag}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
