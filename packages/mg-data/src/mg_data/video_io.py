"""Reading videos (decord) and images (Pillow) as uint8 frames, probing their metadata, and writing mp4 (PyAV).

Everything here works on `(T, H, W, 3)` uint8 RGB arrays; conversion to model layout happens in `transforms`.
decord and PyAV both bundle their own ffmpeg, so no system binary is needed; they are imported lazily so that
`import mg_data` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mg_data.atomic import atomic_file

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv"})

# An image is a one-frame video (animated GIFs give their first frame); this nominal rate only fills `fps`.
IMAGE_FPS = 1.0


class MediaReadError(RuntimeError):
    """A file could not be opened or decoded; the message names the file and the decoder's reason."""


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the extension marks a still image (read with Pillow, served as one frame)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds: frame count, frame size, frame rate, and whether it is a still image."""

    num_frames: int
    height: int
    width: int
    fps: float
    is_image: bool = False

    @property
    def duration(self) -> float:
        """Length in seconds (0 for images)."""
        return 0.0 if self.is_image or self.fps <= 0 else self.num_frames / self.fps

    @property
    def aspect_ratio(self) -> float:
        """Height divided by width."""
        return self.height / self.width


def _open_video(path: str, num_threads: int):
    import decord

    if not os.path.isfile(path):
        raise MediaReadError(f"{path}: file not found")
    try:
        return decord.VideoReader(path, num_threads=num_threads)
    except Exception as exc:  # decord raises RuntimeError / DECORDError / AssertionError for bad files
        raise MediaReadError(f"{path}: cannot open video ({type(exc).__name__}: {exc})") from exc


def _video_info(path: str, reader) -> MediaInfo:
    num_frames = len(reader)
    try:
        fps = float(reader.get_avg_fps())
        height, width = _first_frame_shape(reader)
    except Exception as exc:
        raise MediaReadError(f"{path}: cannot read video metadata ({type(exc).__name__}: {exc})") from exc
    if num_frames <= 0 or height <= 0 or width <= 0:
        raise MediaReadError(f"{path}: video reports {num_frames} frames of {height}x{width}")
    return MediaInfo(num_frames=num_frames, height=height, width=width, fps=fps, is_image=False)


def _first_frame_shape(reader) -> tuple[int, int]:
    # decord exposes the decoded frame size only through a frame; seek back so later reads start clean.
    shape = reader.next().shape
    reader.seek(0)
    return int(shape[0]), int(shape[1])


def _open_image(path: str):
    from PIL import Image

    if not os.path.isfile(path):
        raise MediaReadError(f"{path}: file not found")
    try:
        image = Image.open(path)
        image.load()
    except Exception as exc:
        raise MediaReadError(f"{path}: cannot open image ({type(exc).__name__}: {exc})") from exc
    return image


def probe(path: str | os.PathLike, num_threads: int = 1) -> MediaInfo:
    """Frame count, size and frame rate of a video or image, raising `MediaReadError` if it cannot be read."""
    path = os.fspath(path)
    if is_image_path(path):
        image = _open_image(path)
        return MediaInfo(num_frames=1, height=image.height, width=image.width, fps=IMAGE_FPS, is_image=True)
    return _video_info(path, _open_video(path, num_threads))


class VideoFile:
    """An open video: frame count, frame rate and frame reads by index. Open one per sample (decord readers
    slow down when kept for long). `num_frames` and `fps` cost no decoding; `info` decodes one frame for the size.

    `read(indices)` accepts repeated and unordered indices (loop/pad policies) and decodes each frame once.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1):
        self.path = os.fspath(path)
        self._reader = _open_video(self.path, num_threads)
        self.num_frames = len(self._reader)
        try:
            self.fps = float(self._reader.get_avg_fps())
        except Exception as exc:
            raise MediaReadError(
                f"{self.path}: cannot read the frame rate ({type(exc).__name__}: {exc})"
            ) from exc
        if self.num_frames <= 0:
            raise MediaReadError(f"{self.path}: video reports {self.num_frames} frames")
        self._info: MediaInfo | None = None

    @property
    def info(self) -> MediaInfo:
        """Full metadata including the frame size (decodes the first frame once)."""
        if self._info is None:
            self._info = _video_info(self.path, self._reader)
        return self._info

    def read(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """Frames at `indices` as `(len(indices), H, W, 3)` uint8."""
        indices = _checked_indices(self.path, indices, self.num_frames)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            frames = self._reader.get_batch(unique).asnumpy()
        except Exception as exc:
            if "DECORDArrayCopyFromTo" not in str(exc):
                raise MediaReadError(
                    f"{self.path}: cannot decode frames ({type(exc).__name__}: {exc})"
                ) from exc
            # decord 0.6 cannot copy out frames of some narrow widths (e.g. 8, 16, 24, 48, 72 px): its row
            # padding breaks a size check. Those files are fine, so PyAV decodes them instead.
            frames = _read_with_pyav(self.path, unique)
        if frames.shape[0] != unique.size or frames.ndim != 4 or frames.shape[-1] != 3:
            raise MediaReadError(f"{self.path}: decoder returned frames of shape {frames.shape}")
        if unique.size == indices.size and np.array_equal(unique, indices):
            return frames
        return frames[inverse.reshape(-1)]

    def close(self) -> None:
        """Release the decoder."""
        self._reader = None

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_with_pyav(path: str, indices: np.ndarray) -> np.ndarray:
    """Frames at sorted unique `indices`, decoding from the start with PyAV (for files decord mis-copies)."""
    import av

    wanted = set(indices.tolist())
    frames = []
    try:
        with av.open(path) as container:
            for number, frame in enumerate(container.decode(video=0)):
                if number in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if number >= indices[-1]:
                    break
    except Exception as exc:
        raise MediaReadError(f"{path}: cannot decode frames with PyAV ({type(exc).__name__}: {exc})") from exc
    if len(frames) != len(indices):
        raise MediaReadError(f"{path}: PyAV decoded {len(frames)} of the {len(indices)} requested frames")
    return np.stack(frames)


def _checked_indices(path: str, indices: np.ndarray | list[int], num_frames: int) -> np.ndarray:
    """`indices` as int64, or an error naming the file when none are given or one is outside [0, num_frames)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError(f"{path}: no frame indices requested")
    if indices.min() < 0 or indices.max() >= num_frames:
        raise IndexError(f"{path}: frame indices {indices.tolist()} outside [0, {num_frames})")
    return indices


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as `(1, H, W, 3)` uint8 RGB (alpha dropped, palettes and greyscale converted)."""
    path = os.fspath(path)
    image = _open_image(path)
    try:
        frame = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise MediaReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return frame[None]


def read_video(path: str | os.PathLike, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
    """Frames of a video as `(T, H, W, 3)` uint8 (all frames, or those at `indices`). A still image (by extension,
    see `is_image_path`) reads as a one-frame video, as the datasets serve it."""
    if is_image_path(path):
        frame = read_image(path)
        return frame if indices is None else frame[_checked_indices(os.fspath(path), indices, 1)]
    with VideoFile(path) as video:
        if indices is None:
            indices = np.arange(video.num_frames)
        return video.read(indices)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 16.0,
    crf: int = 18,
    codec: str = "libx264",
) -> None:
    """Write `(T, H, W, 3)` uint8 RGB frames as an H.264 mp4 (PyAV's bundled encoder), atomically.

    H.264 with yuv420p needs even height and width. `crf` is x264's quality (0 = lossless, 18 = visually
    lossless, 23 = x264's default). The file appears only when complete (temporary file + rename).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    num_frames, height, width = frames.shape[:3]
    if num_frames == 0:
        raise ValueError(f"{path}: no frames to write")
    if height % 2 or width % 2:
        raise ValueError(f"{path}: H.264 (yuv420p) needs an even frame size, got {height}x{width}")
    from fractions import Fraction

    with atomic_file(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One encoder thread makes the bitstream identical run to run (a deterministic dataset).
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "threads": "1"} if codec == "libx264" else {}
        for frame in frames:
            planes = rgb_to_yuv420p(frame)
            for packet in stream.encode(av.VideoFrame.from_ndarray(planes, format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """One `(H, W, 3)` uint8 RGB frame as yuv420p planes stacked into an `(H * 3 // 2, W)` uint8 array.

    BT.601 limited range (what decoders assume for untagged SD video), chroma averaged over 2x2 blocks. Done in
    numpy rather than by libswscale: swscale's SIMD paths gave inputs that differed by one level depending on
    memory layout and CPU, and x264 turns such a difference into different coding decisions.
    """
    height, width = frame.shape[:2]
    rgb = frame.astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 16.0 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255.0
    pooled = rgb.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    red, green, blue = pooled[..., 0], pooled[..., 1], pooled[..., 2]
    chroma_b = 128.0 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255.0
    chroma_r = 128.0 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255.0
    flat = np.concatenate([plane.ravel() for plane in (luma, chroma_b, chroma_r)])
    return np.clip(np.rint(flat), 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def write_image(path: str | os.PathLike, frame: np.ndarray) -> None:
    """Write one `(H, W, 3)` uint8 RGB frame with Pillow (format from the extension), atomically."""
    from PIL import Image

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 frame, got {frame.dtype} {frame.shape}")
    with atomic_file(path) as tmp:
        Image.fromarray(frame).save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower()))
