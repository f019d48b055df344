"""Test helpers around the stand-in ``cgpu``: point the transport at it, set fault rules, read its call log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cgpu_fake
import pytest

FAKE = Path(__file__).resolve().parent / "cgpu"


class FakeCgpu:
    """One stand-in runtime: its content folder (the remote root), its rules and its call log."""

    def __init__(self, base: Path) -> None:
        self.root = base / "content"
        self.root.mkdir(parents=True)
        self.rules_path = base / "cgpu_rules.json"
        self.log_path = base / "cgpu_calls.jsonl"
        self.rules_path.write_text(json.dumps({"rules": []}))
        # the stand-in started by this very interpreter: a version-manager shim would cost 0.2 s a call
        self.executable = base / "bin" / "cgpu"
        self.executable.parent.mkdir()
        self.executable.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(FAKE.parent)!r})\n"
            "from cgpu_fake import main\nsys.exit(main(sys.argv[1:]))\n"
        )
        self.executable.chmod(0o755)

    def env(self) -> dict[str, str]:
        return {
            "CGPU_BIN": str(self.executable), "CGPU_FAKE_CONTENT": str(self.root), "CGPU_KIT_REMOTE_ROOT": str(self.root),
            "CGPU_FAKE_RULES": str(self.rules_path), "CGPU_FAKE_LOG": str(self.log_path),
        }

    def set_rules(self, *rules: dict[str, Any]) -> None:
        self.rules_path.write_text(json.dumps({"rules": list(rules)}))
        Path(str(self.rules_path) + ".state").unlink(missing_ok=True)

    def fired(self) -> list[int]:
        """How many times each rule fired, in the order of the rules."""
        state_file = Path(str(self.rules_path) + ".state")
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        count = len(json.loads(self.rules_path.read_text())["rules"])
        return [state.get("fired", {}).get(str(n), 0) for n in range(count)]

    def calls(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def complete_copies(self) -> dict[str, int]:
        """Remote path -> how many ``cgpu copy`` calls wrote it completely."""
        out: dict[str, int] = {}
        for call in self.calls():
            if call["cmd"] == "copy" and call.get("complete"):
                out[call["dest"]] = out.get(call["dest"], 0) + 1
        return out

    def recycle(self) -> None:
        cgpu_fake.recycle(self.root)

    def cleanup(self) -> None:
        cgpu_fake.kill_runtime_processes(self.root)


@pytest.fixture
def fake_cgpu(tmp_path, monkeypatch):
    """The stand-in cgpu on PATH's place (``CGPU_BIN``), its runtime root a folder of this test."""
    fake = FakeCgpu(tmp_path / "cgpu")
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    for name in ("CGPU_FAKE_AUTH", "CGPU_FAKE_LATENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CGPU_KIT_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "0")
    yield fake
    fake.cleanup()


def no_pwned(*folders: Path) -> list[Path]:
    """Files named ``pwned`` in these folders (there must be none)."""
    return [f / "pwned" for f in folders if (f / "pwned").exists()]


__all__ = ["FAKE", "FakeCgpu", "fake_cgpu", "no_pwned"]
