"""Training data for video diffusion models, returned as numpy arrays and plain Python objects (no deep learning framework needed).

Main entry points: `load_manifest`, `VideoDataset`, `BucketConfig` + `BucketBatchSampler`, `TextEmbeddingStore`,
`LatentStore` / `LatentCacheWriter`, `make_synthetic_dataset` / `analyze_clip`, `check_manifest`.
Submodules with heavy dependencies (decord, PyAV, Pillow) import them only when used.
"""

from mg_data.__about__ import __version__
from mg_data.buckets import (
    Bucket,
    BucketAssignment,
    BucketBatchSampler,
    BucketConfig,
    BucketStats,
    assign_buckets,
    parse_aspect_ratio,
)
from mg_data.caches import (
    CacheError,
    LatentCacheWriter,
    LatentMeta,
    LatentStore,
    TextEmbeddingStore,
    cache_key,
    write_latent,
)
from mg_data.check import CheckReport, check_manifest
from mg_data.dataset import VideoDataset, collate
from mg_data.manifest import (
    Manifest,
    ManifestError,
    ManifestRow,
    load_manifest,
    parse_manifest,
    probe_manifest,
    scan_folder,
    write_manifest,
)
from mg_data.synth import (
    ClipAnalysis,
    SyntheticDataset,
    analyze_clip,
    caption_for,
    make_synthetic_dataset,
    render_clip,
)
from mg_data.transforms import (
    ClipTooShort,
    FrameSampling,
    hflip,
    latent_frames,
    resize,
    resize_crop,
    resize_shortest_side,
    sample_frame_indices,
    to_model_layout,
    to_uint8_frames,
)
from mg_data.video_io import (
    MediaInfo,
    MediaReadError,
    VideoFile,
    is_image_path,
    probe,
    read_image,
    read_video,
    write_image,
    write_video,
)

__all__ = [
    "Bucket",
    "BucketAssignment",
    "BucketBatchSampler",
    "BucketConfig",
    "BucketStats",
    "CacheError",
    "CheckReport",
    "ClipAnalysis",
    "ClipTooShort",
    "FrameSampling",
    "LatentCacheWriter",
    "LatentMeta",
    "LatentStore",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "MediaInfo",
    "MediaReadError",
    "SyntheticDataset",
    "TextEmbeddingStore",
    "VideoDataset",
    "VideoFile",
    "__version__",
    "analyze_clip",
    "assign_buckets",
    "cache_key",
    "caption_for",
    "check_manifest",
    "collate",
    "hflip",
    "is_image_path",
    "latent_frames",
    "load_manifest",
    "make_synthetic_dataset",
    "parse_aspect_ratio",
    "parse_manifest",
    "probe",
    "probe_manifest",
    "read_image",
    "read_video",
    "render_clip",
    "resize",
    "resize_crop",
    "resize_shortest_side",
    "sample_frame_indices",
    "scan_folder",
    "to_model_layout",
    "to_uint8_frames",
    "write_image",
    "write_latent",
    "write_manifest",
    "write_video",
]
