"""Transcripts as values, written as .srt, .vtt, .json and .txt, and read back strictly.

Every format is written from one normalized :class:`Transcript` (times rounded to the millisecond, clamped
inside the audio, starts never going back, empty segments dropped), so the four files of an item always
agree with each other. The readers are strict on purpose: the tests use them to prove a file is valid, and
a user can use them to check subtitles from anywhere (``check_file("talk.srt", duration=62.5)``).

No heavy imports: the runtime, the tests and the local side all use this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import InputError

#: output formats, in the order they are written
FORMATS: tuple[str, ...] = ("srt", "vtt", "json", "txt")


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "end": self.end, "word": self.word}
        if self.probability is not None:
            d["probability"] = round(float(self.probability), 4)
        return d


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    """What an engine heard in one item; ``duration`` is the audio's, used to keep cues inside it."""

    segments: list[Segment]
    language: str | None = None
    duration: float | None = None
    language_probability: float | None = None
    task: str = "transcribe"
    engine: str = ""
    model: str = ""

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    def normalized(self) -> Transcript:
        """A copy fit for every format: millisecond times inside ``[0, duration]``, never going back."""
        limit = _ms(self.duration) if self.duration else None
        out: list[Segment] = []
        last_start = 0
        for seg in self.segments:
            text = clean_text(seg.text)
            if not text:
                continue
            start = max(_ms(seg.start), last_start)
            end = max(_ms(seg.end), start)
            if limit is not None:
                start, end = min(start, limit), min(end, limit)
            words = []
            for w in seg.words:
                ws = min(max(_ms(w.start), start), end)
                we = min(max(_ms(w.end), ws), end)
                words.append(Word(ws / 1000, we / 1000, w.word, w.probability))
            out.append(Segment(start / 1000, end / 1000, text, words))
            last_start = start
        return Transcript(out, self.language, self.duration, self.language_probability, self.task, self.engine, self.model)

    def to_dict(self) -> dict[str, Any]:
        segments = []
        for n, s in enumerate(self.segments, 1):
            seg: dict[str, Any] = {"id": n, "start": s.start, "end": s.end, "text": s.text}
            if s.words:
                seg["words"] = [w.to_dict() for w in s.words]
            segments.append(seg)
        return {
            "text": self.text, "language": self.language,
            "language_probability": None if self.language_probability is None else round(float(self.language_probability), 4),
            "duration": self.duration, "task": self.task, "engine": self.engine, "model": self.model,
            "segments": segments,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """Read our .json, or the reference ``whisper`` command's (same segment fields)."""
        segments = [
            Segment(float(s["start"]), float(s["end"]), str(s.get("text", "")),
                    [Word(float(w["start"]), float(w["end"]), str(w["word"]), w.get("probability")) for w in s.get("words", [])])
            for s in data.get("segments", [])
        ]
        return cls(segments, data.get("language"), data.get("duration"), data.get("language_probability"),
                   data.get("task", "transcribe"), data.get("engine", ""), data.get("model", ""))


def _ms(seconds: float) -> int:
    return max(0, int(round(float(seconds) * 1000)))


def clean_text(text: str) -> str:
    """One cue's text: no blank lines (they end an SRT cue) and no ``-->`` (it starts a WebVTT timing)."""
    lines = [" ".join(line.split()) for line in str(text).replace("-->", "->").splitlines()]
    return "\n".join(line for line in lines if line)


def timestamp(seconds: float, sep: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with ``sep="."``, ``HH:MM:SS.mmm`` (WebVTT)."""
    ms = _ms(seconds)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


# -- writers --------------------------------------------------------------------------------------------------
# An empty transcript (silence) is still a valid file: .srt/.txt hold one blank line (zero cues) rather than
# nothing at all, so that "no speech" is told apart from "nothing written".


def to_srt(transcript: Transcript) -> str:
    t = transcript.normalized()
    blocks = [f"{n}\n{timestamp(s.start)} --> {timestamp(s.end)}\n{s.text}\n" for n, s in enumerate(t.segments, 1)]
    return "\n".join(blocks) or "\n"


def to_vtt(transcript: Transcript) -> str:
    t = transcript.normalized()
    blocks = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text}\n" for s in t.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_json(transcript: Transcript) -> str:
    return json.dumps(transcript.normalized().to_dict(), indent=1, ensure_ascii=False) + "\n"


def to_txt(transcript: Transcript) -> str:
    return "".join(s.text.replace("\n", " ") + "\n" for s in transcript.normalized().segments) or "\n"


WRITERS = {"srt": to_srt, "vtt": to_vtt, "json": to_json, "txt": to_txt}


def write(transcript: Transcript, fmt: str, path: Path) -> Path:
    """Write ``transcript`` as ``fmt`` (one of :data:`FORMATS`) to ``path`` in UTF-8."""
    try:
        writer = WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown subtitle format {fmt!r}; known: {', '.join(FORMATS)}") from None
    path.write_text(writer(transcript), encoding="utf-8", newline="\n")
    return path


# -- readers and checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cue:
    index: int
    start: float
    end: float
    text: str


_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_SRT_TIMING = re.compile(rf"^{_SRT_TIME} --> {_SRT_TIME}$")
_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_VTT_TIMING = re.compile(rf"^{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t].*)?$")


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _blocks(text: str) -> list[list[str]]:
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def parse_srt(text: str, *, source: str = "srt") -> list[Cue]:
    """Cues of an SRT text; :class:`InputError` names the first cue that breaks the format."""
    cues = []
    for n, block in enumerate(_blocks(text), 1):
        if not block[0].strip().isdigit() or int(block[0]) != n:
            raise InputError(f"{source}: cue {n} should start with its number {n}, found {block[0]!r}", path=source)
        if len(block) < 3:
            raise InputError(f"{source}: cue {n} needs a timing line and at least one line of text", path=source)
        m = _SRT_TIMING.match(block[1].strip())
        if not m:
            raise InputError(f"{source}: cue {n} has a bad timing line {block[1]!r} (want HH:MM:SS,mmm --> HH:MM:SS,mmm)", path=source)
        g = m.groups()
        cues.append(Cue(n, _seconds(*g[:4]), _seconds(*g[4:]), "\n".join(block[2:])))
    return cues


def parse_vtt(text: str, *, source: str = "vtt") -> list[Cue]:
    """Cues of a WebVTT text (optional cue identifiers, NOTE and STYLE blocks skipped)."""
    blocks = _blocks(text)
    if not blocks or not re.match(r"^WEBVTT(?:[ \t].*)?$", blocks[0][0]):
        raise InputError(f"{source}: a WebVTT file must start with the line WEBVTT", path=source)
    cues = []
    for block in blocks[1:]:  # the first block is the header (WEBVTT and its metadata lines)
        if block[0].startswith(("NOTE", "STYLE", "REGION")):
            continue
        timing = 1 if "-->" not in block[0] else 0
        m = _VTT_TIMING.match(block[timing].strip()) if len(block) > timing else None
        if not m:
            raise InputError(f"{source}: cue {len(cues) + 1} has no valid timing line (want HH:MM:SS.mmm --> HH:MM:SS.mmm)", path=source)
        if len(block) <= timing + 1:
            raise InputError(f"{source}: cue {len(cues) + 1} has no text", path=source)
        g = m.groups()
        cues.append(Cue(len(cues) + 1, _seconds(*g[:4]), _seconds(*g[4:]), "\n".join(block[timing + 1:])))
    return cues


def parse_json(text: str, *, source: str = "json") -> list[Cue]:
    """Cues of a transcript .json (ours or the reference ``whisper`` command's)."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON object with segments was expected, found a {type(data).__name__}")
        transcript = Transcript.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{source}: not a transcript JSON ({exc})", path=source) from None
    return [Cue(n, s.start, s.end, s.text.strip()) for n, s in enumerate(transcript.segments, 1) if s.text.strip()]


def parse_txt(text: str, *, source: str = "txt") -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_cues(cues: Sequence[Cue], *, duration: float | None = None, source: str = "subtitles", slack: float = 0.0) -> None:
    """Raise :class:`InputError` unless every cue ends after it starts, starts never go back, and every
    time lies inside ``[0, duration + slack]`` when the duration is known."""
    previous = 0.0
    for cue in cues:
        where = f"{source}: cue {cue.index} ({timestamp(cue.start)} --> {timestamp(cue.end)})"
        if cue.end < cue.start:
            raise InputError(f"{where} ends before it starts", path=source)
        if cue.start < previous:
            raise InputError(f"{where} starts before the previous cue", path=source)
        if duration is not None and cue.end > duration + slack:
            raise InputError(f"{where} ends after the audio ({duration:.3f}s)", path=source)
        if not cue.text.strip():
            raise InputError(f"{where} has no text", path=source)
        previous = cue.start


PARSERS = {".srt": parse_srt, ".vtt": parse_vtt, ".json": parse_json}


def read_cues(path: str | Path, *, duration: float | None = None) -> list[Cue]:
    """Parse and check a .srt, .vtt or .json file; the cues, or :class:`InputError` saying what is wrong."""
    path = Path(path)
    try:
        parse = PARSERS[path.suffix.lower()]
    except KeyError:
        raise InputError(f"{path}: not a subtitle file this reader knows ({', '.join(PARSERS)})", path=str(path)) from None
    cues = parse(path.read_text(encoding="utf-8"), source=str(path))
    check_cues(cues, duration=duration, source=str(path))
    return cues


check_file = read_cues


def same_cues(a: Iterable[Cue], b: Iterable[Cue], *, tolerance: float = 0.0015) -> bool:
    """Whether two cue lists say the same thing at the same times (to the millisecond)."""
    a, b = list(a), list(b)
    return len(a) == len(b) and all(
        abs(x.start - y.start) <= tolerance and abs(x.end - y.end) <= tolerance
        and " ".join(x.text.split()) == " ".join(y.text.split())
        for x, y in zip(a, b)
    )


__all__ = [
    "FORMATS", "Cue", "Segment", "Transcript", "Word", "check_cues", "check_file", "parse_json", "parse_srt",
    "parse_txt", "parse_vtt", "read_cues", "same_cues", "timestamp", "to_json", "to_srt", "to_txt", "to_vtt", "write",
]
