"""CSV manifests: one row per video or image, validated on load so that a bad file fails with its name, line and column.

Columns (header names; order free):
- `video` (required): path of the video or image, relative to the dataset root (images go by extension).
- `caption`: the text prompt.
- `text_emb`, `latent`: cache keys overriding the default (the `video` path with `.npz`), docs/contracts.md 2-3.
- `num_frames`, `height`, `width`, `fps`: metadata; when all four are present, buckets need not open the files
  (`mg-data check --write-manifest` adds them).
- any other column is kept as a string in `ManifestRow.extra` (e.g. the synthetic set's `color`, `shape`, `direction`).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mg_data.atomic import atomic_file
from mg_data.video_io import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    MediaInfo,
    MediaReadError,
    is_image_path,
    probe,
)

KNOWN_COLUMNS = ("video", "caption", "text_emb", "latent", "num_frames", "height", "width", "fps")
METADATA_COLUMNS = ("num_frames", "height", "width", "fps")


class ManifestError(ValueError):
    """A manifest is malformed; the message names the file, the line and the column."""


@dataclass
class ManifestRow:
    """One sample of a manifest. `line` is the 1-based line of the CSV file where the row starts."""

    video: str
    caption: str | None = None
    text_emb: str | None = None
    latent: str | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def is_image(self) -> bool:
        """True when `video` names a still image."""
        return is_image_path(self.video)

    @property
    def info(self) -> MediaInfo | None:
        """Metadata from the manifest's columns, or None when any of them is missing."""
        if None in (self.num_frames, self.height, self.width, self.fps):
            return None
        return MediaInfo(self.num_frames, self.height, self.width, self.fps, is_image=self.is_image)

    def to_dict(self) -> dict[str, str]:
        """The row as CSV cells (missing optional values as empty strings)."""
        cells = {name: getattr(self, name) for name in KNOWN_COLUMNS}
        cells = {name: "" if value is None else str(value) for name, value in cells.items()}
        cells.update(self.extra)
        return cells


@dataclass
class Manifest:
    """The rows of one manifest, the folder their paths are relative to, and the file they came from."""

    rows: list[ManifestRow]
    root: Path
    path: Path | None = None
    columns: tuple[str, ...] = ("video",)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> ManifestRow:
        return self.rows[index]

    def __iter__(self):
        return iter(self.rows)

    def abspath(self, index_or_row: int | ManifestRow) -> str:
        """Absolute path of a row's file (`root / video`)."""
        row = self.rows[index_or_row] if isinstance(index_or_row, int) else index_or_row
        return os.fspath(self.root / row.video)

    def where(self, description: int | ManifestRow) -> str:
        """'file, line N' for messages about a row."""
        row = self.rows[description] if isinstance(description, int) else description
        return f"{self.path or '<manifest>'}, line {row.line}"

    @property
    def has_metadata(self) -> bool:
        """True when every row carries frame count, size and fps, so nothing needs probing."""
        return all(row.info is not None for row in self.rows)


def _parse_number(text: str, kind: type, where: str, column: str):
    try:
        value = kind(text)
    except ValueError:
        raise ManifestError(f"{where}, column '{column}': expected {kind.__name__}, got {text!r}") from None
    if value < 0 or (kind is float and value != value):
        raise ManifestError(f"{where}, column '{column}': expected a non-negative number, got {text!r}")
    return value


def _parse_row(cells: dict[str, str], line: int, where: str) -> ManifestRow:
    video = (cells.get("video") or "").strip()
    if not video:
        raise ManifestError(f"{where}, column 'video': empty path")
    if os.path.isabs(video) or ".." in Path(video).parts:
        raise ManifestError(f"{where}, column 'video': {video!r} must be a path relative to the dataset root")
    values: dict = {"video": video, "line": line}
    for name in ("caption", "text_emb", "latent"):
        text = cells.get(name)
        if text is not None and (name == "caption" or text.strip()):
            values[name] = text if name == "caption" else text.strip()
    for name, kind in (("num_frames", int), ("height", int), ("width", int), ("fps", float)):
        text = (cells.get(name) or "").strip()
        if text:
            values[name] = _parse_number(text, kind, where, name)
    values["extra"] = {k: v for k, v in cells.items() if k not in KNOWN_COLUMNS}
    return ManifestRow(**values)


def parse_manifest(
    text: str,
    root: str | os.PathLike,
    path: str | os.PathLike | None = None,
    require: Sequence[str] = ("video",),
) -> Manifest:
    """Parse CSV text into a validated `Manifest`; `require` lists columns that must exist and be non-empty."""
    name = os.fspath(path) if path is not None else "<manifest>"
    if not text.strip():
        raise ManifestError(f"{name}: empty manifest (expected a header line with a 'video' column)")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except csv.Error as exc:
        raise ManifestError(f"{name}, line 1: unreadable header ({exc})") from None
    header = [column.strip() for column in header]
    for column in set(require) | {"video"}:
        if column not in header:
            raise ManifestError(f"{name}, line 1: missing column '{column}' (header has {header})")
    duplicates = sorted({column for column in header if header.count(column) > 1})
    if duplicates:
        raise ManifestError(f"{name}, line 1: duplicate columns {duplicates}")
    rows: list[ManifestRow] = []
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ManifestError(f"{name}, line {line}: unreadable row ({exc})") from None
        where = f"{name}, line {line}"
        next_line = reader.line_num + 1
        if not cells or all(not cell.strip() for cell in cells):
            line = next_line
            continue
        if len(cells) != len(header):
            raise ManifestError(
                f"{where}: expected {len(header)} fields ({', '.join(header)}), got {len(cells)}"
            )
        row_cells = dict(zip(header, cells, strict=True))
        for column in require:
            if not row_cells[column].strip():
                raise ManifestError(f"{where}, column '{column}': empty value")
        rows.append(_parse_row(row_cells, line, where))
        line = next_line
    if not rows:
        raise ManifestError(f"{name}: no rows after the header")
    return Manifest(
        rows=rows, root=Path(root), path=Path(path) if path is not None else None, columns=tuple(header)
    )


def load_manifest(
    path: str | os.PathLike, root: str | os.PathLike | None = None, require: Sequence[str] = ("video",)
) -> Manifest:
    """Load and validate a manifest CSV, or list a folder of videos and images when `path` is a directory.

    `root` is the folder that `video` paths are relative to (default: the CSV's folder, or the folder itself).
    Raises `ManifestError` naming the file, line and column of the first problem.
    """
    path = Path(path)
    if path.is_dir():
        return scan_folder(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    return parse_manifest(text, root if root is not None else path.parent, path=path, require=require)


def scan_folder(root: str | os.PathLike) -> Manifest:
    """A manifest of every video and image under `root` (recursive, sorted, no captions)."""
    root = Path(root)
    extensions = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise ManifestError(f"{root}: no video or image files found")
    rows = [ManifestRow(video=p.relative_to(root).as_posix(), line=0) for p in files]
    return Manifest(rows=rows, root=root, path=None, columns=("video",))


def write_manifest(
    path: str | os.PathLike,
    rows: Iterable[ManifestRow | Mapping[str, object]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write rows (ManifestRow or dicts) as a CSV, atomically. `columns` defaults to the used columns in a stable order."""
    dicts = [
        row.to_dict()
        if isinstance(row, ManifestRow)
        else {k: "" if v is None else str(v) for k, v in row.items()}
        for row in rows
    ]
    if columns is None:
        used = {key for cells in dicts for key, value in cells.items() if value != ""}
        extra = sorted(used - set(KNOWN_COLUMNS))
        columns = [name for name in KNOWN_COLUMNS if name in used or name == "video"] + extra
    if "video" not in columns:
        raise ValueError(f"{path}: a manifest needs a 'video' column, got {list(columns)}")
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for cells in dicts:
            writer.writerow({name: cells.get(name, "") for name in columns})
    return Path(path)


def probe_manifest(
    manifest: Manifest, num_workers: int = 1, verbose: bool = False, use_columns: bool = True
) -> list[MediaInfo | MediaReadError]:
    """Metadata of every row: from the manifest's columns when present (`use_columns`), else by opening the
    file. A file that cannot be read yields its `MediaReadError` instead of raising. Prints progress when
    `verbose` (every ~10%)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(row: ManifestRow) -> MediaInfo | MediaReadError:
        if use_columns and row.info is not None:
            return row.info
        try:
            return probe(manifest.abspath(row))
        except MediaReadError as exc:
            return exc

    total = len(manifest)
    step = max(1, total // 10)
    started = time.perf_counter()
    results: list[MediaInfo | MediaReadError] = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for index, result in enumerate(pool.map(one, manifest.rows)):
            results.append(result)
            if verbose and ((index + 1) % step == 0 or index + 1 == total):
                print(
                    f"probing {manifest.path or manifest.root}: {index + 1}/{total} ({time.perf_counter() - started:.1f} s)",
                    flush=True,
                )
    return results
