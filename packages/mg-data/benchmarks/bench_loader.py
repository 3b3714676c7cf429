"""Loader speed: VideoDataset frames/s next to raw decord on the same frames, and cached latents vs decoding.

Run: python packages/mg-data/benchmarks/bench_loader.py [--content synth|textured] [--n 24 --size 256 ...]

Paths, timed on the same files and the same frame indices:
- raw decord: VideoReader + get_batch(indices) -> uint8 (T, H, W, 3), what a hand-written loader does;
- mg-data plain path: VideoDataset[i] at native size -> float32 (3, T, H, W) in [-1, 1] (target >= 0.95x raw);
- mg-data with resize + centre crop to half size (information only);
- mg-data serving cached latents (16, T/8, H/8, W/8) instead of decoding (speed-up over the plain path).

The machine this runs on is usually shared, so every sample is timed `--rounds` times with the paths
interleaved, and each path's time is the sum over samples of its fastest round (the least disturbed one).
`--content synth` (default) uses the synthetic dataset, whose flat backgrounds make decoding unusually cheap
(the hardest case for the ratio); `--content textured` pans a detailed random texture, closer to real footage.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mg_data import (
    LatentCacheWriter,
    VideoDataset,
    load_manifest,
    make_synthetic_dataset,
    write_manifest,
    write_video,
)
from mg_data.transforms import latent_frames, sample_frame_indices


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def _textured_clips(out: Path, n: int, size: int, num_frames: int) -> Path:
    """Clips panning over a detailed random texture (coarse blocks + fine grain), x264 at its default quality."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        coarse = rng.uniform(0, 255, (size // 16 + 2, (size + 2 * num_frames) // 16 + 2, 3)).astype(
            np.float32
        )
        coarse = np.kron(coarse, np.ones((16, 16, 1), np.float32))[:size, : size + 2 * num_frames]
        texture = np.clip(coarse * 0.7 + rng.uniform(0, 80, coarse.shape), 0, 255).astype(np.uint8)
        frames = np.stack([texture[:, 2 * t : 2 * t + size] for t in range(num_frames)])
        write_video(out / f"{i:04d}.mp4", frames, fps=16, crf=23)
        rows.append({"video": f"{i:04d}.mp4"})
    return write_manifest(out / "all.csv", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--content", choices=["synth", "textured"], default="synth", help="clip content (default synth)"
    )
    parser.add_argument("--n", type=int, default=24, help="number of clips (default 24)")
    parser.add_argument("--size", type=int, default=256, help="frame size of the clips (default 256)")
    parser.add_argument("--source-frames", type=int, default=64, help="frames per file (default 64)")
    parser.add_argument("--frames", type=int, default=16, help="frames per sample (default 16)")
    parser.add_argument("--stride", type=int, default=2, help="frame stride (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=7, help="timings per sample and path; the fastest counts (default 7)"
    )
    parser.add_argument(
        "--workdir", default=None, help="where to write the clips (default: a temporary folder)"
    )
    args = parser.parse_args()

    import decord

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        started = time.perf_counter()
        if args.content == "synth":
            synth = make_synthetic_dataset(
                root / "clips",
                n=args.n,
                seed=0,
                size=args.size,
                num_frames=args.source_frames,
                fps=16,
                val_fraction=0,
            )
            manifest = load_manifest(synth.all_manifest)
        else:
            manifest = load_manifest(_textured_clips(root / "clips", args.n, args.size, args.source_frames))
        seconds = time.perf_counter() - started
        print(
            f"wrote {args.n} {args.content} clips of {args.source_frames} frames at {args.size}x{args.size} in {seconds:.1f} s"
        )

        kwargs = dict(num_frames=args.frames, stride=args.stride, seed=0)
        plain = VideoDataset(manifest, **kwargs)
        resized = VideoDataset(manifest, size=args.size // 2, **kwargs)
        shape = (16, latent_frames(args.frames), args.size // 8, args.size // 8)
        writer = LatentCacheWriter(
            root / "latents", 1.5305, 0.0609, frames=args.frames, size=(args.size, args.size)
        )
        rng = np.random.default_rng(0)
        for row in manifest.rows:
            writer.write(
                row.video,
                rng.standard_normal(shape, dtype=np.float32),
                rng.uniform(0.01, 0.1, shape).astype(np.float32),
            )
        latent = VideoDataset(manifest, latent_cache=root / "latents", **kwargs)

        def raw_decord(i: int) -> np.ndarray:
            reader = decord.VideoReader(manifest.abspath(i), num_threads=1)
            rng = np.random.default_rng([0, 0, i])  # the dataset's generator for (seed, epoch, index)
            indices = sample_frame_indices(len(reader), reader.get_avg_fps(), plain.sampling, rng)
            return reader.get_batch(indices).asnumpy()

        # same work: the dataset's samples hold exactly the frames raw decord reads
        for i in range(min(3, args.n)):
            expected = raw_decord(i).transpose(3, 0, 1, 2) / 127.5 - 1
            assert np.abs(plain[i]["video"] - expected).max() < 1e-5, (
                "the dataset and raw decord read different frames"
            )

        paths = {
            "raw decord (uint8 THWC)": raw_decord,
            "mg-data plain (float32 CTHW)": lambda i: plain[i]["video"],
            f"mg-data resize+crop to {args.size // 2}": lambda i: resized[i]["video"],
            f"mg-data cached latents {shape}": lambda i: latent[i]["latent"],
        }
        fastest = {name: np.full(args.n, np.inf) for name in paths}
        for _ in range(args.rounds):
            for i in range(args.n):
                for name, run in paths.items():
                    t0 = time.perf_counter()
                    run(i)
                    fastest[name][i] = min(fastest[name][i], time.perf_counter() - t0)
        total = {name: float(times.sum()) for name, times in fastest.items()}

        raw = args.n * args.frames / total["raw decord (uint8 THWC)"]
        print(
            f"\n{args.n} samples x {args.frames} frames (stride {args.stride}) from {args.size}x{args.size} "
            f"{args.content} clips; fastest of {args.rounds} interleaved timings per sample"
        )
        print(f"{'path':<44}{'samples/s':>11}{'frames/s':>11}{'vs raw':>9}")
        for name, seconds in total.items():
            frames_per_s = args.n * args.frames / seconds
            print(f"{name:<44}{args.n / seconds:>11.1f}{frames_per_s:>11.0f}{frames_per_s / raw:>8.2f}x")
        pixel = total["mg-data plain (float32 CTHW)"]
        print(f"\nplain loader / raw decord: {(args.n * args.frames / pixel) / raw:.2f}x (target >= 0.95x)")
        print(
            f"cached latents speed-up over decoding (plain path): {pixel / total[f'mg-data cached latents {shape}']:.1f}x"
        )
        frames = args.n * args.frames
        mg_bench(
            "mg-data/bench_loader",
            (f"plain loader, {args.content} clips", frames / pixel, raw, "raw decord", "frames/s", "higher"),
            (
                f"resize+crop to {args.size // 2}, {args.content} clips",
                frames / total[f"mg-data resize+crop to {args.size // 2}"],
                raw,
                "raw decord",
                "frames/s",
                "higher",
            ),
            (
                "cached latents",
                args.n / total[f"mg-data cached latents {shape}"],
                args.n / pixel,
                "plain loader, decoding",
                "samples/s",
                "higher",
            ),
        )


if __name__ == "__main__":
    main()
