"""Subtitle files: written from one normalized transcript, read back strictly, and readable by ffmpeg."""

from __future__ import annotations

import json
import subprocess

import pytest

from cgpu_kit.exceptions import InputError
from cgpu_kit.subtitles import (
    Cue,
    Segment,
    Transcript,
    Word,
    check_cues,
    parse_json,
    parse_srt,
    parse_txt,
    parse_vtt,
    read_cues,
    same_cues,
    timestamp,
    to_json,
    to_srt,
    to_txt,
    to_vtt,
    write,
)


def transcript(*segments: Segment, duration: float | None = 10.0) -> Transcript:
    return Transcript(list(segments), language="en", duration=duration, engine="faster-whisper", model="tiny.en")


MESSY = transcript(
    Segment(0.0004, 1.2344, " Hello there."),
    Segment(1.5, 1.4, "ends before it starts"),           # end < start: clamped to the start
    Segment(1.45, 2.0, "   "),                             # nothing said: dropped
    Segment(1.3, 3.0, "goes back\n\nwith a blank line"),   # starts before the previous cue: moved forward
    Segment(9.5, 11.25, "past the end --> of the audio", [Word(9.5, 10.0, " past"), Word(10.5, 11.2, " end")]),
)


def test_timestamps_are_hours_minutes_seconds_and_milliseconds():
    assert timestamp(0) == "00:00:00,000"
    assert timestamp(3661.5) == "01:01:01,500"
    assert timestamp(59.9996) == "00:01:00,000"
    assert timestamp(360000.25, ".") == "100:00:00.250"


def test_when_segments_are_messy_every_format_gets_valid_cues_inside_the_audio():
    cues = parse_srt(to_srt(MESSY))
    check_cues(cues, duration=10.0)
    assert [c.index for c in cues] == [1, 2, 3, 4]
    assert [(c.start, c.end) for c in cues] == [(0.0, 1.234), (1.5, 1.5), (1.5, 3.0), (9.5, 10.0)]
    assert cues[2].text == "goes back\nwith a blank line"
    assert cues[3].text == "past the end -> of the audio"
    data = json.loads(to_json(MESSY))
    assert data["segments"][3]["words"] == [{"start": 9.5, "end": 10.0, "word": " past"}, {"start": 10.0, "end": 10.0, "word": " end"}]


def test_the_formats_agree_with_each_other():
    srt = parse_srt(to_srt(MESSY))
    assert same_cues(srt, parse_vtt(to_vtt(MESSY)))
    assert same_cues(srt, parse_json(to_json(MESSY)))
    assert parse_txt(to_txt(MESSY)) == [c.text.replace("\n", " ") for c in srt]
    assert Transcript.from_dict(json.loads(to_json(MESSY))).to_dict() == json.loads(to_json(MESSY))


def test_when_nothing_was_said_every_format_is_still_a_valid_file(tmp_path):
    empty = transcript()
    for fmt in ("srt", "vtt", "json", "txt"):
        path = write(empty, fmt, tmp_path / f"silence.{fmt}")
        assert path.stat().st_size > 0  # "no speech" is told apart from "nothing written"
    assert read_cues(tmp_path / "silence.srt") == []
    assert read_cues(tmp_path / "silence.vtt") == []
    assert read_cues(tmp_path / "silence.json") == []
    assert parse_txt((tmp_path / "silence.txt").read_text()) == []


def test_unicode_text_survives_a_round_trip(tmp_path):
    t = transcript(Segment(0, 1, "Zoë says «bonjour» — 你好 🙂"))
    path = write(t, "srt", tmp_path / "u.srt")
    assert read_cues(path)[0].text == "Zoë says «bonjour» — 你好 🙂"


@pytest.mark.parametrize("text, fragment", [
    ("2\n00:00:00,000 --> 00:00:01,000\nhi\n", "cue 1 should start with its number 1"),
    ("1\n00:00:00,000 --> 00:00:01,000\nhi\n\n3\n00:00:02,000 --> 00:00:03,000\nyo\n", "cue 2 should start with its number 2"),
    ("1\n00:00:00.000 --> 00:00:01.000\nhi\n", "bad timing line"),
    ("1\n0:00:00,000 --> 00:00:01,000\nhi\n", "bad timing line"),
    ("1\n00:00:00,000 --> 00:00:01,000\n", "needs a timing line and at least one line of text"),
])
def test_a_broken_srt_is_refused_naming_the_cue(text, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_srt(text, source="x.srt")


@pytest.mark.parametrize("cues, duration, fragment", [
    ([Cue(1, 2.0, 1.0, "a")], None, "ends before it starts"),
    ([Cue(1, 2.0, 3.0, "a"), Cue(2, 1.0, 4.0, "b")], None, "starts before the previous cue"),
    ([Cue(1, 0.0, 5.5, "a")], 5.0, "ends after the audio"),
])
def test_cues_out_of_order_or_past_the_audio_are_refused(cues, duration, fragment):
    with pytest.raises(InputError, match=fragment):
        check_cues(cues, duration=duration)


def test_webvtt_from_elsewhere_is_read_header_notes_identifiers_and_short_times_included():
    text = ("\ufeffWEBVTT - made elsewhere\nKind: captions\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:02.500 align:start\n"
            "Hello\nthere\n\n01:00:00.000 --> 01:00:01.000\nLater\n")
    cues = parse_vtt(text)
    assert [(c.start, c.end, c.text) for c in cues] == [(1.0, 2.5, "Hello\nthere"), (3600.0, 3601.0, "Later")]
    with pytest.raises(InputError, match="must start with the line WEBVTT"):
        parse_vtt("00:01.000 --> 00:02.000\nhi\n")


def test_the_reference_whisper_json_is_read_too():
    ref = {"text": " Hi there.", "language": "en", "segments": [
        {"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hi there.", "tokens": [1, 2], "temperature": 0.0,
         "avg_logprob": -0.3, "compression_ratio": 0.9, "no_speech_prob": 0.01,
         "words": [{"word": " Hi", "start": 0.0, "end": 0.5, "probability": 0.9}]},
    ]}
    assert parse_json(json.dumps(ref)) == [Cue(1, 0.0, 1.5, "Hi there.")]
    with pytest.raises(InputError, match="not a transcript JSON"):
        parse_json("[1, 2]")


def test_ffmpeg_reads_our_srt_and_vtt_with_the_same_timings(tmp_path):
    t = transcript(Segment(0.25, 1.5, "First line."), Segment(2.0, 3.125, "Second, with ünïcode."), duration=4.0)
    srt, vtt = write(t, "srt", tmp_path / "a b.srt"), write(t, "vtt", tmp_path / "a b.vtt")
    for src in (srt, vtt):
        dest = tmp_path / (src.stem + f" from {src.suffix[1:]}.vtt")
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), str(dest)],
                       check=True, stdin=subprocess.DEVNULL, timeout=60)
        assert same_cues(parse_vtt(dest.read_text()), parse_srt(srt.read_text()))
