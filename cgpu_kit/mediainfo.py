"""What a probe learns about a media file (cgpu_kit/media.py runs ffprobe, cgpu_kit/banner.py reads ffmpeg)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MediaInfo:
    """What a job needs to know about an input before it is sent anywhere."""

    duration: float | None = None
    has_video: bool = False
    has_audio: bool = False
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    format: str | None = None
    is_image: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif"}
