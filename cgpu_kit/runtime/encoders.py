"""Which ffmpeg and which encoder a delivery encode uses: NVENC when a build lists it AND a one-frame test
encode on it succeeds (a build lists ``h264_nvenc`` whether or not there is a GPU with an encoder: Debian's
and imageio-ffmpeg's do on a machine with none, and data-centre GPUs such as the H100 have no NVENC), else
the software encoder of the codec that some build has: libx264, libx265, libsvtav1 (libaom-av1 after it).
"""

from __future__ import annotations

import functools
import logging
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from .. import media

log = logging.getLogger("cgpu_kit.runtime")

NVENC = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}
SOFTWARE = {"h264": ("libx264",), "hevc": ("libx265",), "av1": ("libsvtav1", "libaom-av1")}
#: the quality a codec gets when none is asked for (CRF, or NVENC's CQ): visually clean, PSNR well above 35 dB
DEFAULT_QUALITY = {"h264": 20, "hevc": 22, "av1": 30}
#: the highest quality value (the worst picture) each encoder takes
MAX_QUALITY = {"h264": 51, "hevc": 51, "av1": 63}

_SVT_PRESET = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 7, "slow": 5,
               "slower": 4, "veryslow": 2}
_AOM_CPU = {"ultrafast": 8, "superfast": 8, "veryfast": 7, "faster": 6, "fast": 5, "medium": 4, "slow": 3,
            "slower": 2, "veryslow": 1}
_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p3", "medium": "p4",
                 "slow": "p5", "slower": "p6", "veryslow": "p7"}


@dataclass(frozen=True)
class Encoder:
    """The encoder chosen, the ffmpeg that has it, and why (what was tried before it)."""

    codec: str
    name: str
    ffmpeg: str
    hardware: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def encoders_of(ffmpeg: str) -> frozenset[str]:
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-encoders"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(parts[1] for parts in (line.split() for line in out.splitlines())
                     if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS")


@functools.cache
def nvenc_works(ffmpeg: str, encoder: str) -> tuple[bool, str]:
    """Encode one small frame with ``encoder``: the only sure test that a GPU with that encoder is there."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=256x256:r=1",
            "-frames:v", "1", "-c:v", encoder, "-f", "null", "-"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode == 0, (lines[0] if lines else f"exit {proc.returncode}")


def choose(codec: str, hardware: str = "auto") -> Encoder:
    """The encoder for ``codec`` (``h264``, ``hevc``, ``av1``); ``hardware``: auto, nvenc (fail without it) or
    software. Raises :class:`~cgpu_kit.exceptions.MissingDependencyError` naming what was tried."""
    from ..exceptions import MissingDependencyError

    builds = media._candidates()
    tried: list[str] = []
    if hardware in ("auto", "nvenc"):
        name = NVENC[codec]
        for exe in builds:
            if name not in encoders_of(exe):
                tried.append(f"{exe}: has no {name}")
                continue
            ok, why = nvenc_works(exe, name)
            if ok:
                return Encoder(codec, name, exe, True, f"{name} encoded a test frame with {exe}")
            tried.append(f"{exe}: {name} failed a test frame ({why})")
        if hardware == "nvenc":
            raise MissingDependencyError(f"no usable {name} here: {'; '.join(tried) or 'no ffmpeg found'}. An NVIDIA GPU "
                                         "with NVENC (T4, L4, A10; not the A100 or H100) and its driver are needed; "
                                         "or ask for --hardware software")
    for name in SOFTWARE[codec]:
        for exe in builds:
            if name in encoders_of(exe):
                because = f"; {'; '.join(tried)}" if tried else ""
                return Encoder(codec, name, exe, False, f"software encoder{because}")
            tried.append(f"{exe}: has no {name}")
    raise MissingDependencyError(f"no ffmpeg here can encode {codec}: {'; '.join(tried) or 'no ffmpeg found'}. Install "
                                 "Debian's ffmpeg (apt-get install ffmpeg) or pip install imageio-ffmpeg")


def video_args(enc: Encoder, quality: int, preset: str) -> list[str]:
    """The encoder's options for a quality (CRF / CQ) and an x264-style preset name, mapped to its own scale."""
    if enc.hardware:
        return ["-c:v", enc.name, "-preset", _NVENC_PRESET[preset], "-rc", "vbr", "-cq", str(quality), "-b:v", "0"]
    if enc.name == "libsvtav1":
        return ["-c:v", enc.name, "-crf", str(quality), "-preset", str(_SVT_PRESET[preset])]
    if enc.name == "libaom-av1":
        return ["-c:v", enc.name, "-crf", str(quality), "-b:v", "0", "-cpu-used", str(_AOM_CPU[preset]), "-row-mt", "1"]
    argv = ["-c:v", enc.name, "-crf", str(quality), "-preset", preset]
    if enc.name == "libx265":
        argv += ["-x265-params", "log-level=error"]
    return argv


def preset_used(enc: Encoder, preset: str) -> str:
    if enc.hardware:
        return _NVENC_PRESET[preset]
    return {"libsvtav1": str(_SVT_PRESET[preset]), "libaom-av1": f"cpu-used {_AOM_CPU[preset]}"}.get(enc.name, preset)
