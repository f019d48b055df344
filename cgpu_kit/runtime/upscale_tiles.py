"""A memory bound for huge pictures: the engine is handed tiles of at most :data:`MAX_CALL_PIXELS` input pixels.

The engine allocates its input, its output at the model's native scale and a copy of that output for each
call, so one call on an 8000x8000 picture asked for x2 with a x4 model wanted 32000x32000 pixels several times
over (issue 21: 7.5 GB after 30 s and growing). Cut into tiles, each with a margin of context that is cropped
off after upscaling, and each resized to the asked scale before it is placed, the native-scale output never
exists whole: memory is the input, the output at the asked scale, and one tile per stream.

Tiles are chosen from the picture's pixels alone (never from a guess at the machine's memory), all of one size
so that the engine reuses its buffers; a picture that fits in one call goes through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: input pixels of one engine call at most: a 1080p frame (1920x1088) still goes whole, as it always did
MAX_CALL_PIXELS = 1920 * 1088
#: input pixels of context on each side of a tile, cropped off after upscaling (seams stay invisible)
MARGIN = 16

#: (packed bytes, width, height, channels) of one engine call, and the engine's answer
Call = tuple[bytes, int, int, int]


@dataclass(frozen=True)
class Tile:
    """The part of the picture a tile fills (``x0:x1``, ``y0:y1``) and the larger window the engine sees."""

    x0: int
    y0: int
    x1: int
    y1: int
    wx0: int
    wy0: int
    wx1: int
    wy1: int


def tile_grid(width: int, height: int, *, max_pixels: int = MAX_CALL_PIXELS, margin: int = MARGIN) -> list[Tile]:
    """Tiles covering ``width`` x ``height``, each window (tile plus margin, slid inside the picture) of one size."""
    if width * height <= max_pixels:
        return [Tile(0, 0, width, height, 0, 0, width, height)]
    side = max(32, math.isqrt(max_pixels) - 2 * margin)
    nx, ny = math.ceil(width / side), math.ceil(height / side)
    tw, th = math.ceil(width / nx), math.ceil(height / ny)
    ww, wh = min(width, tw + 2 * margin), min(height, th + 2 * margin)
    tiles = []
    for j in range(ny):
        for i in range(nx):
            x0, y0 = i * tw, j * th
            x1, y1 = min(width, x0 + tw), min(height, y0 + th)
            if x0 >= x1 or y0 >= y1:
                continue
            wx0 = min(max(0, x0 - margin), width - ww)
            wy0 = min(max(0, y0 - margin), height - wh)
            tiles.append(Tile(x0, y0, x1, y1, wx0, wy0, wx0 + ww, wy0 + wh))
    return tiles


def output_bytes(width: int, height: int, channels: int, scale: int) -> int:
    """Bytes of the finished picture, which must exist whole to be encoded."""
    return width * height * channels * scale * scale


def upscale_pixels(
    pixels: Any, native: int, scale: int, run: Callable[[Iterable[Call]], Iterator[bytes]], *,
    max_pixels: int = MAX_CALL_PIXELS,
) -> Any:
    """Upscale an ``(h, w, c)`` uint8 array to ``scale`` through ``run`` (engine calls in, answers out, in order).

    ``run`` may be a plain ``map`` over one engine or a stream pool spreading the tiles over several; the
    windows are cut lazily, so only the tiles in flight exist beside the input and the output.
    """
    import numpy as np

    from .upscale_engine import resize_to

    h, w, c = pixels.shape
    tiles = tile_grid(w, h, max_pixels=max_pixels)
    out = np.empty((h * scale, w * scale, c), np.uint8)
    calls = (
        (np.ascontiguousarray(pixels[t.wy0:t.wy1, t.wx0:t.wx1]).tobytes(), t.wx1 - t.wx0, t.wy1 - t.wy0, c)
        for t in tiles
    )
    for t, data in zip(tiles, run(calls)):
        big = np.frombuffer(data, np.uint8).reshape((t.wy1 - t.wy0) * native, (t.wx1 - t.wx0) * native, c)
        part = big[(t.y0 - t.wy0) * native:(t.y1 - t.wy0) * native, (t.x0 - t.wx0) * native:(t.x1 - t.wx0) * native]
        out[t.y0 * scale:t.y1 * scale, t.x0 * scale:t.x1 * scale] = resize_to(part, (t.x1 - t.x0) * scale, (t.y1 - t.y0) * scale)
    return out


def upscale_frame(
    frame: bytes, width: int, height: int, native: int, scale: int, call: Callable[[bytes, int, int, int], bytes], *,
    max_pixels: int = MAX_CALL_PIXELS,
) -> bytes:
    """One packed RGB video frame to ``scale`` on one engine: straight through when it fits one call."""
    if native == scale and width * height <= max_pixels:
        return call(frame, width, height, 3)
    import numpy as np

    pixels = np.frombuffer(frame, np.uint8).reshape(height, width, 3)
    return upscale_pixels(pixels, native, scale, lambda calls: (call(*c) for c in calls), max_pixels=max_pixels).tobytes()
