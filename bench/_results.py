"""Each benchmark writes its own section of bench/RESULTS.md, between markers, leaving the others alone."""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script it names; re-run it to refresh its figures.\n"


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) the section ``name`` of RESULTS.md with ``markdown``."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS.read_text() if RESULTS.exists() else HEADER
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
        RESULTS.write_text(text)


def read_section(name: str) -> str:
    """The current markdown of section ``name`` ('' when there is none)."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(re.escape(begin) + r"\n?(.*?)\n?" + re.escape(end), text, re.S)
    return m.group(1) if m else ""
