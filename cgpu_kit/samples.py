"""Small generated inputs: shaky clips for the README's first command, the templates' defaults and tests.

A shaky clip is a still, textured frame (ffmpeg's mandelbrot source) cropped with a jittering x/y of at most
``jitter`` pixels: what vidstab can correct and phase correlation can measure.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from .media import find_ffmpeg

log = logging.getLogger(__name__)


def make_shaky_clip(
    dest: Path, *, width: int = 320, height: int = 240, frames: int = 60, fps: int = 25, jitter: int = 16,
    audio: bool = True, seed: int = 0,
) -> Path:
    """Write a shaky H.264 clip to ``dest`` (with a quiet tone as audio unless ``audio`` is False)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    pad = 2 * jitter + 8
    a, b = 12.9898 + seed * 3.1, 78.233 + seed * 1.7
    x = f"{jitter + 4}+{jitter}*sin(n*{a})"
    y = f"{jitter + 4}+{jitter}*sin(n*{b})"
    video = (
        f"mandelbrot=s={width + pad}x{height + pad}:rate={fps}:start_scale={2.5 + 0.3 * seed},"
        f"trim=end_frame=1,loop=loop={frames - 1}:size=1:start=0,setpts=N/{fps}/TB,"
        f"crop={width}:{height}:x='{x}':y='{y}',format=yuv420p"
    )
    argv = [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=44100:duration={frames / fps}"]
    argv += ["-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    argv += ["-f", "mp4", "file:" + str(dest)]
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True, capture_output=True)
    return dest


def sample_clips(folder: Path, count: int = 3) -> list[Path]:
    """The sample set: ``count`` shaky clips in ``folder``, generated on first use."""
    paths = []
    for n in range(count):
        path = folder / f"shaky_{n + 1}.mp4"
        if not path.exists() or path.stat().st_size == 0:
            log.info("generating sample clip %s", path)
            make_shaky_clip(path, seed=n)
        paths.append(path)
    return paths


def sample_inputs(job_type: str) -> list[Path]:
    """The bundled sample inputs of a job type, generated on first use in ``$CGPU_KIT_SAMPLES`` (default
    ``$XDG_CACHE_HOME/cgpu_kit/samples``, ``~/.cache`` without it): what ``--samples`` and the panel's sample button use."""
    import os

    from .registry import job_class
    from .runtime.processor import load_processor
    from .util import cache_dir

    folder = Path(os.environ.get("CGPU_KIT_SAMPLES") or cache_dir("samples")) / job_type
    if job_type == "stabilize":
        return sample_clips(folder)
    existing = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    return existing or load_processor(job_class(job_type).processor).make_samples(folder)
