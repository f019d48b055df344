"""The command line: exit codes users can script on, a summary with reasons, every command documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import copy_as

from cgpu_kit.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cgpu_kit", *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_when_every_item_succeeds_the_exit_status_is_0_and_a_rerun_skips_them(shaky_clip, tmp_path):
    clip = copy_as(shaky_clip(width=160, height=120, frames=20, jitter=8), tmp_path / "-a clip.mp4")
    first = cli("stabilize", str(clip), "-o", str(tmp_path / "out"), "--preset", "ultrafast")
    assert first.returncode == 0, first.stderr
    assert "completed: 1 done, 0 failed, 0 skipped" in first.stderr
    assert (tmp_path / "out" / "-a clip.mp4").stat().st_size > 0

    again = cli("stabilize", str(clip), "-o", str(tmp_path / "out"), "--preset", "ultrafast")
    assert again.returncode == 0, again.stderr
    assert "0 done, 0 failed, 1 skipped" in again.stderr and "already done" in again.stderr


def test_when_an_item_fails_the_exit_status_is_1_and_the_summary_gives_the_reason(shaky_clip, tmp_path):
    clip = shaky_clip(width=160, height=120, frames=20, jitter=8)
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    run = cli("stabilize", str(clip), str(bad), "-o", str(tmp_path / "out"), "--preset", "ultrafast", "--json")
    assert run.returncode == 1
    assert re.search(r"partial: 1 done, 1 failed", run.stderr)
    assert "FAILED" in run.stderr and "notes.txt" in run.stderr and "not readable media" in run.stderr
    assert '"status": "partial"' in run.stdout


def test_when_a_parameter_is_out_of_bounds_the_cli_refuses_it_before_running(tmp_path):
    run = cli("stabilize", "x.mp4", "-o", str(tmp_path / "out"), "--shakiness", "11")
    assert run.returncode == 2 and "'shakiness' must be between 1 and 10" in run.stderr
    run = cli("stabilize", "x.mp4", "-o", str(tmp_path / "out"), "--preset", "turbo")
    assert run.returncode == 2 and "invalid choice" in run.stderr


def test_every_command_has_help_and_is_documented_in_the_readme():
    parser = build_parser()
    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"stabilize"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help().strip()
        assert f"cgpu-kit {name}" in readme, f"`cgpu-kit {name}` is not in the README"
    help_text = cli("--help").stdout
    assert "stabilize" in help_text


def test_a_built_in_command_parses_the_same_with_its_own_parser_as_with_the_full_one(tmp_path):
    """The CLI builds only the named built-in job type's subcommand (a faster start); same options, same values."""
    from cgpu_kit.registry import BUILTIN

    for name in BUILTIN:
        argv = [name, "a b.wav", "-o", str(tmp_path / "out"), "--workers", "2", "-q"]
        own, full = build_parser(argv), build_parser()
        sub = next(a for a in own._actions if a.dest == "command")
        assert set(sub.choices) == {name, "attach", "report"}  # no other job type was built (nor imported for it)
        assert vars(own.parse_args(argv)) == vars(full.parse_args(argv))
    assert {"stabilize", "transcribe"} <= set(cli("--help").stdout.split())  # help lists them all
