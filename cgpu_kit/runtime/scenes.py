"""Scene cuts of one clip with PySceneDetect: a cut list as JSON and CSV, and a thumbnail per scene on request.

Each scene is ``{start, end, start_frame, end_frame}``: seconds, and frames counted from 0, ``end_frame``
being the first frame of the next scene (so ``end = end_frame / fps`` and scenes tile the clip). A clip with
no cut is one scene. ``scenedetect`` and OpenCV are imported when a batch starts, not when this module is.
"""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path
from typing import Any

from ..params import Param, ParamSet
from .context import ItemContext, ItemError
from .processor import Processor

#: the height of a scene's thumbnail in pixels (never more than the clip's)
THUMB_HEIGHT = 180


def scene_records(scene_list: list, fps: float, frames: int | None) -> list[dict[str, Any]]:
    """PySceneDetect's (start, end) timecode pairs as plain records; the whole clip when it found no cut."""
    if not scene_list:
        if not frames:
            return []
        return [{"start": 0.0, "end": round(frames / fps, 6), "start_frame": 0, "end_frame": int(frames)}]
    records = []
    for start, end in scene_list:
        s, e = _frame(start), _frame(end)
        records.append({"start": round(s / fps, 6), "end": round(e / fps, 6), "start_frame": int(s), "end_frame": int(e)})
    return records


def _frame(timecode) -> int:
    """The frame number of a FrameTimecode (``frame_num`` since PySceneDetect 0.7, ``get_frames()`` before)."""
    value = getattr(timecode, "frame_num", None)
    return int(value if value is not None else timecode.get_frames())


def write_csv(path: Path, scenes: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["scene", "start", "end", "duration", "start_frame", "end_frame"])
        for n, s in enumerate(scenes, 1):
            w.writerow([n, f"{s['start']:.3f}", f"{s['end']:.3f}", f"{s['end'] - s['start']:.3f}", s["start_frame"], s["end_frame"]])


SCENES_PARAMS = ParamSet([
    Param("detector", "content", "content: a cut where a frame differs from the one before by more than threshold; "
          "adaptive: where it differs much more than its neighbours do (fewer false cuts on fast motion)",
          choices=("content", "adaptive")),
    Param("threshold", 27.0, "content detector: the HSV difference (0-255) that makes a cut; lower finds more cuts "
          "(adaptive: the least difference a cut must have, scaled)", min=1.0, max=255.0),
    Param("adaptive_threshold", 3.0, "adaptive detector: how many times its neighbours' difference a cut must be",
          min=0.5, max=50.0),
    Param("min_scene_len", 15, "the shortest scene in frames (no cut closer than this to the last one)", min=1, max=100000),
    Param("thumbnails", False, "also write one JPEG per scene (its middle frame): <stem>.scene-001.jpg ..."),
])


class ScenesProcessor(Processor):
    """Runs a fresh detector per clip; OpenCV decodes, so clips go side by side, one per core."""

    params_spec = SCENES_PARAMS

    max_workers = max(1, os.cpu_count() or 1)

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        try:
            import cv2  # noqa: F401
            import scenedetect  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"{exc}; scene detection needs PySceneDetect and OpenCV: pip install 'cgpu-kit[scenes]' "
                              "(scenedetect goes in with --no-deps: scripts/setup.sh)") from exc

    def _detector(self):
        from scenedetect import AdaptiveDetector, ContentDetector

        p = self.params
        if p["detector"] == "adaptive":
            return AdaptiveDetector(adaptive_threshold=p["adaptive_threshold"], min_scene_len=p["min_scene_len"],
                                    min_content_val=p["threshold"] / 27.0 * 15.0)
        return ContentDetector(threshold=p["threshold"], min_scene_len=p["min_scene_len"])

    def process(self, ctx: ItemContext) -> list[Path]:
        import scenedetect
        from scenedetect import SceneManager, open_video

        if not ctx.item.probe.get("has_video", True):
            raise ItemError("has no video stream; scene detection needs a video")
        try:
            video = open_video(str(ctx.item.path))
        except Exception as exc:  # scenedetect raises its own OSError subclasses, and OpenCV's errors
            raise ItemError(f"OpenCV cannot open it ({exc}); re-export it as H.264 MP4") from exc
        manager = SceneManager()
        manager.add_detector(self._detector())
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(ctx, manager, stop), daemon=True)
        watcher.start()
        try:
            manager.detect_scenes(video=video, show_progress=False)
        finally:
            stop.set()
            watcher.join()
        ctx.check()
        fps = float(video.frame_rate)
        frames = video.frame_number
        scenes = scene_records(manager.get_scene_list(start_in_scene=True), fps, frames)
        if not scenes:
            raise ItemError("no frame could be decoded; is the clip empty or damaged?")
        data = {"fps": fps, "frames": frames, "detector": self.params["detector"], "scenes": scenes}
        out_json, out_csv = ctx.output(".scenes.json"), ctx.output(".scenes.csv")
        out_json.write_text(json.dumps(data, indent=1), encoding="utf-8")
        write_csv(out_csv, scenes)
        outputs = [out_json, out_csv]
        if self.params["thumbnails"]:
            outputs += self._thumbnails(ctx, scenes)
        ctx.metadata.update({"scenes": len(scenes), "fps": fps, "tool": f"PySceneDetect {scenedetect.__version__}"})
        return outputs

    @staticmethod
    def _watch(ctx: ItemContext, manager, stop: threading.Event) -> None:
        """Stops detection when the item's time is up or the batch is cancelled (detect_scenes runs in-process)."""
        while not stop.wait(0.2):
            try:
                ctx.check()
            except ItemError:
                manager.stop()
                return

    def _thumbnails(self, ctx: ItemContext, scenes: list[dict[str, Any]]) -> list[Path]:
        """One JPEG per scene, its middle frame; ``<stem>.scene-001.jpg`` and so on."""
        import cv2

        cap = cv2.VideoCapture(str(ctx.item.path))
        paths = []
        try:
            for n, s in enumerate(scenes, 1):
                ctx.check()
                cap.set(cv2.CAP_PROP_POS_FRAMES, (s["start_frame"] + s["end_frame"] - 1) // 2)
                ok, frame = cap.read()
                if not ok:
                    continue
                h, w = frame.shape[:2]
                if h > THUMB_HEIGHT:
                    frame = cv2.resize(frame, (max(2, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
                ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
                if ok:
                    path = ctx.output(f".scene-{n:03d}.jpg")
                    path.write_bytes(jpeg.tobytes())
                    paths.append(path)
        finally:
            cap.release()
        return paths

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        from ..generated import make_cut_clip

        return [make_cut_clip(dest / "four shots.mp4")]
