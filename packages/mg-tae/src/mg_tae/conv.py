"""Convolutions of the TAE on channels-last tensors, built on one large matmul per conv (the CPU fast path).

MindSpore's CPU convolution picks a reference oneDNN kernel on AVX-512 machines (~0.5 GFLOP/s), and its strided
copies are slow too. So every conv here is written as: one row gather (or a few contiguous copies) that builds
a flat "source" matrix of rows (pixels) by channels, then one matmul over K shifted row windows of it
concatenated on channels (im2col by contiguous row slicing). Borders are handled by zero rows and columns laid into the source
(each image row gets one zero pixel after it, each frame one zero row), so every tap is a plain row offset; the
outputs at the padding positions are computed and dropped. Large convs run in row chunks to bound the im2col
block.

Speed rules measured on CPU (MindSpore 2.10): slicing one axis of a tensor of rank <= 3 is a fast copy, while
slicing two axes or indexing a middle axis of a rank-4 tensor is 20-40x slower; so every slice here is written
on a reshaped view with a single sliced axis, and layouts that would need two (padding, cropping, the stride-2
parity split) are one `ops.gather` of whole rows with a constant index (10x faster than slicing to crop). The stride-1 convs (3x3 and temporal) come as cells with a
hand-written backward (`Conv3x3Rows`, `TemporalConv3Rows`, see below); the stride-2 ones use autograd.

Weights keep the standard layouts, (C_out, C_in, kh, kw) for spatial and (C_out, C_in, kt) for temporal convs, so
the same parameters drive MindSpore's native convolutions on Ascend (`backend="native"`).

Graph-mode note: functions reached from a custom `bprop` must not branch (`if` / conditional expressions) on
values that differ from the forward pass: MindSpore 2.10 under `jit` then fails with "The func graph is empty".
Shape-dependent decisions are therefore made by `constexpr` helpers that return plans (tuples), and the code
here only loops over them.
"""

from __future__ import annotations

import functools

import mindspore as ms
import numpy as np
from mindspore import mint, nn, ops
from mindspore.ops import constexpr

# Upper bound on the elements of one im2col block; larger convs are computed in row chunks (256 MiB in fp32).
MAX_WINDOW_ELEMENTS = 64 * 2**20

_MATMUL = (
    ops.MatMul()
)  # the primitive's gradient uses transposing matmuls, mint.matmul's an explicit transpose
_MATMUL_TA = ops.MatMul(transpose_a=True)
_MATMUL_TB = ops.MatMul(transpose_b=True)
_BATCH_MATMUL_TB = ops.BatchMatMul(transpose_b=True)


def smaller(a: int, b: int) -> int:
    """min() of two ints (the builtin min/max do not compile in some MindSpore graph contexts)."""
    return a if a < b else b


@constexpr
def row_chunks(rows: int, width: int) -> tuple:
    """(start, size) row ranges covering [0, rows) whose im2col blocks (size x width) stay under
    `MAX_WINDOW_ELEMENTS` (at least one row per chunk)."""
    step = max(1, min(rows, MAX_WINDOW_ELEMENTS // width))
    return tuple((start, min(step, rows - start)) for start in range(0, rows, step))


@constexpr
def _many(count: int) -> int:
    """1 if count > 1 else 0: an index into a pair of functions, the graph-mode-safe way to branch on a shape."""
    return 1 if count > 1 else 0


def _first(parts):
    return parts[0]


def _cat_rows(parts):
    return mint.cat(parts, 0)


def join_rows(parts):
    """Concatenate row chunks (a single chunk is returned as is), without a graph-mode branch."""
    return (_first, _cat_rows)[_many(len(parts))](parts)


# Below this many channels an im2col block is built by one row gather (about twice as fast for 16 channels and
# one graph node instead of K + 1); from it on, by K contiguous row slices and one concat (faster for wide rows).
GATHER_MAX_CHANNELS = 128


@functools.lru_cache(maxsize=256)
def _window_index_array(start: int, n: int, offsets: tuple) -> np.ndarray:
    rows = np.arange(start, start + n, dtype=np.int32)[:, None]
    return (rows + np.asarray(offsets, np.int32)[None, :]).reshape(-1)


@constexpr
def _window_index(start: int, n: int, offsets: tuple):
    """Row indices [start + r + offsets[k] for r in range(n) for k]: a compile-time constant under jit."""
    return ms.Tensor(_window_index_array(start, n, offsets))


@constexpr
def _gather_index(channels: int) -> int:
    return 1 if channels < GATHER_MAX_CHANNELS else 0


def _windows_by_slices(src, offsets, start: int, n: int):
    return mint.cat([src[start + o : start + o + n] for o in offsets], -1)


def _windows_by_gather(src, offsets, start: int, n: int):
    return ops.gather(src, _window_index(start, n, offsets), 0).reshape(n, len(offsets) * src.shape[1])


def _windows(src, offsets, start: int, n: int):
    """concat_k(src[start + offsets[k] : start + offsets[k] + n]) on channels: the im2col block of n rows."""
    return (_windows_by_slices, _windows_by_gather)[_gather_index(src.shape[1])](src, offsets, start, n)


def shifted_matmul(src, weight, offsets, rows: int):
    """out[r] = concat_k(src[r + offsets[k]]) @ weight for r in [0, rows); weight is (K * C_in, C_out).

    The row windows are contiguous slices of `src`, so building them is cheap. Rows are processed in chunks
    that keep the window block under `MAX_WINDOW_ELEMENTS`.
    """
    chunks = row_chunks(rows, src.shape[1] * len(offsets))
    return join_rows([_MATMUL(_windows(src, offsets, start, n), weight) for start, n in chunks])


def shifted_matmul_rows(src, weight_rows, offsets, rows: int):
    """`shifted_matmul` with the weight as (C_out, K * C_in): the forward convs' layout, which needs no weight
    transpose, and MindSpore's CPU matmul runs ~15% faster with a transposed right operand at these shapes.
    (A separate function rather than a flag: MindSpore's jit cannot share one graph between the two.)"""
    chunks = row_chunks(rows, src.shape[1] * len(offsets))
    return join_rows([_MATMUL_TB(_windows(src, offsets, start, n), weight_rows) for start, n in chunks])


def shifted_matmul_weight_grad(src, dout, offsets, rows: int):
    """dout^T @ concat_k(src[r + offsets[k]]) summed over r in [0, rows): the (C_out, K * C_in) weight gradient
    of `shifted_matmul` (columns ordered (tap, c_in)); dout is (>= rows, C_out)."""
    chunks = row_chunks(rows, src.shape[1] * len(offsets))
    parts = [_MATMUL_TA(dout[start : start + n], _windows(src, offsets, start, n)) for start, n in chunks]
    return ops.addn(parts)


def _tap_major_rows(weight, taps: int):
    """(C_out, C_in, *kernel) -> (C_out, taps * C_in) with columns ordered (tap, c_in).

    Per output channel this is a (C_in, taps) transpose; a batched transposing matmul with the taps x taps
    identity does it exactly and 3-4x faster than a 3D transpose or an identity matmul at 256-512 channels.
    """
    c_out, c_in = weight.shape[0], weight.shape[1]
    eye = ops.broadcast_to(ops.eye(taps, taps, weight.dtype).reshape(1, taps, taps), (c_out, taps, taps))
    return _BATCH_MATMUL_TB(eye, weight.reshape(c_out, c_in, taps)).reshape(c_out, taps * c_in)


def spatial_weight_rows(weight):
    """(C_out, C_in, 3, 3) -> (C_out, 9 * C_in) with taps in row-major (di, dj) order."""
    return _tap_major_rows(weight, 9)


def temporal_weight_rows(weight):
    """(C_out, C_in, 3) -> (C_out, 3 * C_in) with taps in time order (t-1, t, t+1)."""
    return _tap_major_rows(weight, 3)


def _per_tap(weight, taps: int):
    """(C_out, C_in, *kernel) -> (taps, C_out, C_in)."""
    return ops.transpose(weight.reshape(weight.shape[0], weight.shape[1], taps), (2, 0, 1))


def _flipped_transposed_matrix(per_tap):
    """(taps, C_out, C_in) -> (taps * C_out, C_in), rows (tap, c_out) with the taps reversed: the weight matrix
    of the conv that maps dY to dX (the adjoint of a stride-1 conv with symmetric zero padding)."""
    taps = per_tap.shape[0]
    return mint.cat([per_tap[k] for k in range(taps - 1, -1, -1)], 0)


def _weight_from_tap_columns(grad_mat, weight_shape):
    """(C_out, taps * C_in) with columns (tap, c_in) -> a gradient in the weight layout (C_out, C_in, *kernel)."""
    c_out, c_in = weight_shape[0], weight_shape[1]
    taps = grad_mat.shape[1] // c_in
    return ops.transpose(grad_mat.reshape(c_out, taps, c_in), (0, 2, 1)).reshape(weight_shape)


def _bias_grad(dout, c_out: int):
    return dout.reshape(-1, c_out).sum(0)


# ---------------------------------------------------------------------------------------------------------
# Spatial 3x3 convs.
# ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _padded_frames_index_array(n: int, h: int, w: int, gap: int) -> np.ndarray:
    """Row indices of the padded frame layout of n frames of h x w rows: every frame gets one zero pixel after
    each image row and one zero row at its end, and `gap` zero rows come before and after the whole layout.
    Index n h w names the zero row (appended to the source by `_gather_rows_with_zero`)."""
    zero = n * h * w
    grid = np.full((n, h + 1, w + 1), zero, np.int32)
    grid[:, :h, :w] = np.arange(zero, dtype=np.int32).reshape(n, h, w)
    gaps = np.full(gap, zero, np.int32)
    return np.concatenate([gaps, grid.reshape(-1), gaps])


@constexpr
def _padded_frames_index(n: int, h: int, w: int, gap: int):
    return ms.Tensor(_padded_frames_index_array(n, h, w, gap))


@functools.lru_cache(maxsize=256)
def _crop_index_array(n: int, h: int, w: int) -> np.ndarray:
    """Rows of the padded frame layout (no gaps) that hold the n x h x w real pixels, in pixel order."""
    return np.arange(n * (h + 1) * (w + 1), dtype=np.int32).reshape(n, h + 1, w + 1)[:, :h, :w].reshape(-1)


@constexpr
def _crop_index(n: int, h: int, w: int):
    return ms.Tensor(_crop_index_array(n, h, w))


def _gather_rows_with_zero(rows, index):
    """rows (R, C) gathered by `index`, where index R reads a zero row.

    One row gather replaces the strided slices and concatenations that lay out padding: on CPU (MindSpore 2.10)
    it is 2x faster for padding and 10x faster for cropping than slicing two axes (issue 23, `conv` benchmark).
    """
    zero = mint.zeros((1, rows.shape[1]), dtype=rows.dtype)
    return ops.gather(mint.cat([rows, zero], 0), index, 0)


def _pad_frames(x, gap: int = 0):
    """x (N, H, W, C) -> rows (gap + N (H + 1) (W + 1) + gap, C): one zero pixel after every image row, one zero
    row after every frame, `gap` zero rows before and after (a single row gather)."""
    n, h, w, c = x.shape
    return _gather_rows_with_zero(x.reshape(-1, c), _padded_frames_index(n, h, w, gap))


def _crop_frames(y, n: int, h: int, w: int):
    """Inverse of `_pad_frames` on outputs: rows (N (H + 1) (W + 1), C) -> (N, H, W, C) (a single row gather)."""
    c = y.shape[-1]
    return ops.gather(y, _crop_index(n, h, w), 0).reshape(n, h, w, c)


def _conv3x3_source(x):
    """Source rows and window offsets of a 3x3, stride-1, zero-padded conv of x (N, H, W, C).

    Returns (src, offsets, rows): output row r of the padded frame layout (`_pad_frames`) is
    concat_k(src[r + offsets[k]]) @ weight matrix, taps in row-major (di, dj) order.
    """
    n, h, w, _ = x.shape
    pitch = w + 1
    src = _pad_frames(x, pitch + 1)  # reads above the first frame's first row (or below the last) see zeros
    offsets = []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            offsets.append(pitch + 1 + di * pitch + dj)
    return src, tuple(offsets), n * (h + 1) * pitch


def _conv3x3_matmul(x, weight_mat):
    """Conv of x (N, H, W, C) with a (9 C, C_out) weight matrix, on the padded frame layout (no bias)."""
    src, offsets, rows = _conv3x3_source(x)
    return shifted_matmul(src, weight_mat, offsets, rows)


def conv3x3_rows(x, weight, bias):
    """3x3 conv, stride 1, zero padding 1, on x (N, H, W, C) channels-last; weight (C_out, C, 3, 3).

    Differentiable by autograd; `Conv3x3Rows` is the same conv with a faster hand-written backward.
    """
    n, h, w, _ = x.shape
    src, offsets, rows = _conv3x3_source(x)
    y = shifted_matmul_rows(src, spatial_weight_rows(weight), offsets, rows)
    y = ops.bias_add(y, bias) if bias is not None else y
    return _crop_frames(y, n, h, w)


@functools.lru_cache(maxsize=256)
def _stride2_index_array(n: int, h: int, w: int) -> np.ndarray:
    """Row indices of `_stride2_source` into the column pairs of x (rows (N H W/2, 2C)): the even image rows in
    the padded frame layout, a gap, the odd rows, a gap; index N H W/2 reads a zero row."""
    hh, wh = h // 2, w // 2
    zero = n * h * wh
    pairs = np.arange(zero, dtype=np.int32).reshape(n, hh, 2, wh)
    gap = np.full(wh + 2, zero, np.int32)
    parts = []
    for parity in (0, 1):
        grid = np.full((n, hh + 1, wh + 1), zero, np.int32)
        grid[:, :hh, :wh] = pairs[:, :, parity]
        parts += [grid.reshape(-1), gap]
    return np.concatenate(parts)


@constexpr
def _stride2_index(n: int, h: int, w: int):
    return ms.Tensor(_stride2_index_array(n, h, w))


@functools.lru_cache(maxsize=256)
def _stride2_unpad_index_array(n: int, h: int, w: int) -> np.ndarray:
    """The inverse of `_stride2_index` on (even rows; odd rows) in the padded frame layout: the row of each column
    pair of an (N, H, W) image, in pair order."""
    hh, wh = h // 2, w // 2
    frame_rows = n * (hh + 1) * (wh + 1)
    padded = np.arange(frame_rows, dtype=np.int32).reshape(n, hh + 1, wh + 1)[:, :hh, :wh]
    return np.stack([padded, padded + frame_rows], 2).reshape(-1)  # (n, hh, parity, wh)


@constexpr
def _stride2_unpad_index(n: int, h: int, w: int):
    return ms.Tensor(_stride2_unpad_index_array(n, h, w))


def _stride2_source(x):
    """Source rows and offsets of the stride-2 3x3 conv of x (N, H, W, C), H and W even.

    Rows are split by parity and columns paired into 2C channels (column 2j, column 2j + 1), both in the padded
    frame layout of `_pad_frames`: kernel columns 0 and 1 read pair j, kernel column 2 the first half of pair
    j + 1. Windows: even row i (pairs j, j + 1), even row i + 1 (pairs j, j + 1), odd row i (pairs j, j + 1).
    Returns (src, offsets, rows, odd_start); src is one row gather.
    """
    n, h, w, c = x.shape
    hh, wh = h // 2, w // 2
    pitch = wh + 1
    frame_rows = n * (hh + 1) * pitch
    src = _gather_rows_with_zero(x.reshape(-1, 2 * c), _stride2_index(n, h, w))
    odd_start = frame_rows + pitch + 1
    offsets = (0, 1, pitch, pitch + 1, odd_start, odd_start + 1)
    return src, offsets, frame_rows, odd_start


def _stride2_window_blocks(per_tap):
    """(9, C_out, C_in) taps (a, b) -> the six (C_out, 2 C_in) window blocks in `_stride2_source` order: kernel
    row a = 0, 2, 1, each as [tap (a, 0) | tap (a, 1)] for pair j and [tap (a, 2) | 0] for pair j + 1."""
    zero = mint.zeros(per_tap.shape[1:], dtype=per_tap.dtype)
    blocks = []
    for a in (0, 2, 1):
        blocks.append(mint.cat([per_tap[3 * a], per_tap[3 * a + 1]], 1))
        blocks.append(mint.cat([per_tap[3 * a + 2], zero], 1))
    return blocks


def conv3x3_stride2_rows(x, weight, bias):
    """3x3 conv, stride 2, zero padding right/bottom 1 (diffusers' Downsample2D), on x (N, H, W, C), H and W even.

    Differentiable by autograd; `Conv3x3Stride2Rows` is the same conv with a faster hand-written backward.
    """
    n, h, w, _ = x.shape
    src, offsets, rows, _ = _stride2_source(x)
    blocks = _stride2_window_blocks(_per_tap(weight, 9))  # (C_out, 2 C) each
    weight_rows = mint.cat(blocks, 1)  # (C_out, 12 C), columns (window, channel)
    y = shifted_matmul_rows(src, weight_rows, offsets, rows)
    y = ops.bias_add(y, bias) if bias is not None else y
    return _crop_frames(y, n, h // 2, w // 2)


# ---------------------------------------------------------------------------------------------------------
# Temporal convs (kernel 3 over T, replicate padding).
# ---------------------------------------------------------------------------------------------------------


def _keep_all(y, b: int, t_src: int, t_out: int, hw: int):
    return y


def _drop_trailing_frames(y, b: int, t_src: int, t_out: int, hw: int):
    c_out = y.shape[-1]
    pad = mint.zeros(((t_src - t_out) * hw, c_out), dtype=y.dtype)
    y = mint.cat([y, pad], 0).reshape(b, t_src, hw * c_out)[:, :t_out]
    return y.reshape(-1, c_out)


def _clip_rows(b: int, t_src: int, t_out: int, hw: int) -> int:
    """Output rows of a temporal shifted matmul over b clips of t_src frames (hw rows each) up to the last
    clip's t_out-th frame."""
    return ((b - 1) * t_src + t_out) * hw


def _keep_frames(y, b: int, t_src: int, t_out: int, hw: int):
    """Keep t_out frames of each clip of a temporal shifted matmul's output (see `_clip_rows`)."""
    return (_keep_all, _drop_trailing_frames)[_many(b)](y, b, t_src, t_out, hw)


def _time_rows(frames_src, weight_mat, offsets, b: int, t_src: int, t_out: int, hw: int):
    """Run a temporal shifted matmul whose source holds b clips of t_src frames (hw rows each), keep t_out frames."""
    y = shifted_matmul(frames_src, weight_mat, offsets, _clip_rows(b, t_src, t_out, hw))
    return _keep_frames(y, b, t_src, t_out, hw)


def _time_rows_tb(frames_src, weight_rows, offsets, b: int, t_src: int, t_out: int, hw: int):
    """`_time_rows` with the weight as (C_out, K * C_in) (`shifted_matmul_rows`)."""
    y = shifted_matmul_rows(frames_src, weight_rows, offsets, _clip_rows(b, t_src, t_out, hw))
    return _keep_frames(y, b, t_src, t_out, hw)


def _temporal_offsets(hw: int):
    return (0, hw, 2 * hw)


def _replicate_pad_time(x):
    """x (B, T, H, W, C) -> rows of (B, T + 2, H W C) with the first and last frame repeated."""
    b, t, h, w, c = x.shape
    flat = x.reshape(b, t, h * w * c)
    return mint.cat([flat[:, :1], flat, flat[:, t - 1 :]], 1).reshape(-1, c)


def _zero_pad_time(x):
    """x (B, T, H, W, C) -> rows of (B, T + 2, H W C) with a zero frame before and after every clip."""
    b, t, h, w, c = x.shape
    zero = mint.zeros((b, 1, h * w * c), dtype=x.dtype)
    return mint.cat([zero, x.reshape(b, t, h * w * c), zero], 1).reshape(-1, c)


def temporal_conv3_rows(x, weight, bias):
    """Temporal conv, kernel 3, stride 1, replicate padding 1, on x (B, T, H, W, C); weight (C_out, C, 3).

    Differentiable by autograd; `TemporalConv3Rows` is the same conv with a faster hand-written backward.
    """
    b, t, h, w, _ = x.shape
    hw = h * w
    y = _time_rows_tb(
        _replicate_pad_time(x), temporal_weight_rows(weight), _temporal_offsets(hw), b, t + 2, t, hw
    )
    y = ops.bias_add(y, bias) if bias is not None else y
    return y.reshape(b, t, h, w, weight.shape[0])


def _time_stride2_source(x):
    """Source rows of the stride-2 temporal conv of x (B, T, H, W, C): the replicate-padded clip (one more copy of
    the last frame when T + 2 is odd) split into even and odd frames. Returns (src, offsets, half, t_out): windows
    xp[2t], xp[2t + 2], xp[2t + 1] (the largest offset last); `half` frames per clip in each parity."""
    b, t, h, w, c = x.shape
    hw = h * w
    flat = x.reshape(b, t, hw * c)
    pieces = [flat[:, :1], flat] + [flat[:, t - 1 :]] * _stride2_tail_frames(t)
    half = (t + 3) // 2
    pairs = mint.cat(pieces, 1).reshape(b * half, 2 * hw * c)  # frames (2m, 2m + 1) on one line
    src = mint.cat([pairs[:, : hw * c].reshape(-1, c), pairs[:, hw * c :].reshape(-1, c)], 0)
    return src, (0, hw, b * half * hw), half, half - 1


@constexpr
def _stride2_tail_frames(t: int) -> int:
    """Copies of the last frame after a clip of t frames: 1 (replicate padding) + 1 more when t + 2 is odd."""
    return 2 if t % 2 else 1


def temporal_conv3_stride2_rows(x, weight, bias):
    """Temporal conv, kernel 3, stride 2, replicate padding 1: T -> ceil(T / 2); x (B, T, H, W, C).

    Differentiable by autograd; `TemporalConv3Stride2Rows` is the same conv with a faster hand-written backward.
    """
    b, _, h, w, _ = x.shape
    c_out = weight.shape[0]
    src, offsets, half, t_out = _time_stride2_source(x)
    per_tap = _per_tap(weight, 3)
    weight_rows = mint.cat([per_tap[0], per_tap[2], per_tap[1]], 1)  # (C_out, 3 C), windows' tap order
    y = _time_rows_tb(src, weight_rows, offsets, b, half, t_out, h * w)
    y = ops.bias_add(y, bias) if bias is not None else y
    return y.reshape(b, t_out, h, w, c_out)


def pointwise_rows(x, weight, bias):
    """1x1 conv on channels-last x (..., C); weight (C_out, C, 1, 1) or (C_out, C)."""
    c = x.shape[-1]
    c_out = weight.shape[0]
    y = _MATMUL_TB(x.reshape(-1, c), weight.reshape(c_out, c))
    y = ops.bias_add(y, bias) if bias is not None else y
    return y.reshape((*x.shape[:-1], c_out))


# ---------------------------------------------------------------------------------------------------------
# Hand-written backward passes of the stride-1 convs.
#
# Autograd through the row-window forward is slow on CPU: every window slice's gradient materialises a zero
# tensor of the whole source and scatters into it (9 of them per 3x3 conv, summed by AddN), and mint.matmul's
# weight gradient transposes the whole im2col block. These backward passes run forward-style convs only: dX is
# the conv of dY with the flipped, transposed kernel (plus two edge terms for the temporal replicate padding)
# and dW is dY^T @ im2col(X), one transposing matmul per row chunk. The cells take the weights as inputs (they
# hold no parameters), so the gradients reach whichever Parameters the caller passes; tested against autograd,
# native convolutions and numpy, in PyNative and under jit.
# ---------------------------------------------------------------------------------------------------------


class Conv3x3Rows(nn.Cell):
    """`conv3x3_rows(x, weight, bias)` (bias required) as a cell with a hand-written backward."""

    def construct(self, x, weight, bias):
        return conv3x3_rows(x, weight, bias)

    def bprop(self, x, weight, bias, out, dout):
        n, h, w, _ = x.shape
        dx = _crop_frames(_conv3x3_matmul(dout, _flipped_transposed_matrix(_per_tap(weight, 9))), n, h, w)
        src, offsets, rows = _conv3x3_source(x)
        dout_rows = _pad_frames(dout)  # zero gradient at the padding positions
        dw = _weight_from_tap_columns(shifted_matmul_weight_grad(src, dout_rows, offsets, rows), weight.shape)
        return dx, dw, _bias_grad(dout, weight.shape[0])


def _sum_edges(first, last, t: int):
    return first + last  # a single frame is both the first and the last


def _spread_edges(first, last, t: int):
    b, _, row = first.shape
    return mint.cat([first, mint.zeros((b, t - 2, row), dtype=first.dtype), last], 1)


class TemporalConv3Rows(nn.Cell):
    """`temporal_conv3_rows(x, weight, bias)` (bias required) as a cell with a hand-written backward."""

    def construct(self, x, weight, bias):
        return temporal_conv3_rows(x, weight, bias)

    def bprop(self, x, weight, bias, out, dout):
        b, t, h, w, c = x.shape
        c_out = weight.shape[0]
        hw = h * w
        offsets = _temporal_offsets(hw)
        # Replicate padding = zero padding + the edge frames read once more by the outer taps; the adjoint is
        # the zero-padded conv with the flipped, transposed kernel plus those two edge terms.
        per_tap = _per_tap(weight, 3)
        dx = _time_rows(_zero_pad_time(dout), _flipped_transposed_matrix(per_tap), offsets, b, t + 2, t, hw)
        flat = dout.reshape(b, t, hw * c_out)
        first = _MATMUL(flat[:, :1].reshape(-1, c_out), per_tap[0]).reshape(b, 1, hw * c)
        last = _MATMUL(flat[:, t - 1 :].reshape(-1, c_out), per_tap[2]).reshape(b, 1, hw * c)
        edges = (_sum_edges, _spread_edges)[_many(t)](first, last, t)
        dx = (dx.reshape(b, t, hw * c) + edges).reshape(b, t, h, w, c)
        # dW: output rows of the clip-stacked source are t frames per clip then 2 dropped ones (zero gradient).
        dout_rows = mint.cat([flat, mint.zeros((b, 2, hw * c_out), dtype=dout.dtype)], 1).reshape(-1, c_out)
        rows = ((b - 1) * (t + 2) + t) * hw
        grad = shifted_matmul_weight_grad(_replicate_pad_time(x), dout_rows, offsets, rows)
        return dx, _weight_from_tap_columns(grad, weight.shape), _bias_grad(dout, c_out)


class Conv3x3Stride2Rows(nn.Cell):
    """`conv3x3_stride2_rows(x, weight, bias)` (bias required) as a cell with a hand-written backward."""

    def construct(self, x, weight, bias):
        return conv3x3_stride2_rows(x, weight, bias)

    def bprop(self, x, weight, bias, out, dout):
        n, h, w, c = x.shape
        c_out = weight.shape[0]
        pitch = w // 2 + 1
        src, offsets, rows, _ = _stride2_source(x)
        dout_rows = _pad_frames(dout)  # (rows, C_out), zero at the padding positions
        blocks = _stride2_window_blocks(_per_tap(weight, 9))
        # d(source): the adjoint of the row windows, i.e. windows of dY at the mirrored offsets times the
        # transposed blocks; the even rows get four windows, the odd rows two.
        dout_ext = mint.cat([mint.zeros((pitch + 1, c_out), dtype=dout.dtype), dout_rows], 0)
        d_even = shifted_matmul(dout_ext, mint.cat(blocks[:4], 0), (pitch + 1, pitch, 1, 0), rows)
        d_odd = shifted_matmul(dout_ext, mint.cat(blocks[4:], 0), (pitch + 1, pitch), rows)
        dx = ops.gather(mint.cat([d_even, d_odd], 0), _stride2_unpad_index(n, h, w), 0).reshape(n, h, w, c)
        # dW: columns (window, pair channel); windows 1, 3, 5 read only the first half of their pair.
        g = shifted_matmul_weight_grad(src, dout_rows, offsets, rows)  # (C_out, 12 C)
        taps = []
        for window in (0, 4, 2):  # kernel rows a = 0, 1, 2: windows 0, 4, 2 (pair j) and 1, 5, 3 (pair j + 1)
            taps.append(g[:, 2 * c * window : 2 * c * (window + 1)])
            taps.append(g[:, 2 * c * (window + 1) : 2 * c * (window + 1) + c])
        dw = _weight_from_tap_columns(mint.cat(taps, 1), weight.shape)
        return dx, dw, _bias_grad(dout, c_out)


class TemporalConv3Stride2Rows(nn.Cell):
    """`temporal_conv3_stride2_rows(x, weight, bias)` (bias required) as a cell with a hand-written backward."""

    def construct(self, x, weight, bias):
        return temporal_conv3_stride2_rows(x, weight, bias)

    def bprop(self, x, weight, bias, out, dout):
        b, t, h, w, c = x.shape
        c_out = weight.shape[0]
        hw = h * w
        src, offsets, half, t_out = _time_stride2_source(x)
        # dY in the clip-stacked row layout: t_out frames per clip, then one dropped frame (zero gradient).
        dflat = dout.reshape(b, t_out, hw * c_out)
        dout_rows = mint.cat([dflat, mint.zeros((b, half - t_out, hw * c_out), dtype=dout.dtype)], 1)
        dout_rows = dout_rows.reshape(-1, c_out)
        per_tap = _per_tap(weight, 3)
        # Even frame 2m is read by output m (tap 0) and output m - 1 (tap 2); odd frame 2m + 1 by output m (tap 1).
        dout_ext = mint.cat([mint.zeros((hw, c_out), dtype=dout.dtype), dout_rows], 0)
        d_even = shifted_matmul(dout_ext, mint.cat([per_tap[0], per_tap[2]], 0), (hw, 0), b * half * hw)
        d_odd = _MATMUL(dout_rows, per_tap[1])
        d_padded = mint.cat([d_even.reshape(b * half, hw * c), d_odd.reshape(b * half, hw * c)], 1)
        d_padded = d_padded.reshape(b, 2 * half, hw * c)
        # Adjoint of the replicate padding: frame 0 also collects padded frame 0, frame t - 1 the tail copies.
        first = d_padded[:, :1]
        last = d_padded[:, t + 1 : 2 * half].sum(1, keepdims=True)
        edges = (_sum_edges, _spread_edges)[_many(t)](first, last, t)
        dx = (d_padded[:, 1 : t + 1] + edges).reshape(b, t, h, w, c)
        rows = ((b - 1) * half + t_out) * hw
        g = shifted_matmul_weight_grad(src, dout_rows, offsets, rows)  # (C_out, 3 C), windows taps 0, 2, 1
        dw = _weight_from_tap_columns(mint.cat([g[:, :c], g[:, 2 * c :], g[:, c : 2 * c]], 1), weight.shape)
        return dx, dw, _bias_grad(dout, c_out)


# One stateless instance of each serves every layer: MindSpore compiles a custom bprop per cell instance (and
# input shapes), so sharing them halves the jit compile time of a model; gradients per layer are tested equal.
_CONV3X3_ROWS = Conv3x3Rows()
_CONV3X3_STRIDE2_ROWS = Conv3x3Stride2Rows()
_TEMPORAL_CONV3_ROWS = TemporalConv3Rows()
_TEMPORAL_CONV3_STRIDE2_ROWS = TemporalConv3Stride2Rows()


def conv3x3_rows_fast(x, weight, bias):
    """`conv3x3_rows` with the hand-written backward (bias required)."""
    return _CONV3X3_ROWS(x, weight, bias)


def temporal_conv3_rows_fast(x, weight, bias):
    """`temporal_conv3_rows` with the hand-written backward (bias required)."""
    return _TEMPORAL_CONV3_ROWS(x, weight, bias)


def conv3x3_stride2_rows_fast(x, weight, bias):
    """`conv3x3_stride2_rows` with the hand-written backward (bias required)."""
    return _CONV3X3_STRIDE2_ROWS(x, weight, bias)


def temporal_conv3_stride2_rows_fast(x, weight, bias):
    """`temporal_conv3_stride2_rows` with the hand-written backward (bias required)."""
    return _TEMPORAL_CONV3_STRIDE2_ROWS(x, weight, bias)


# ---------------------------------------------------------------------------------------------------------
# Native MindSpore convolutions on the same channels-last tensors and weights (Ascend, and the CPU baseline).
# ---------------------------------------------------------------------------------------------------------


def conv3x3_native(x, weight, bias, stride: int = 1):
    """nn.Conv2d-equivalent via ops.conv2d on (N, C, H, W); stride 2 pads right/bottom like Downsample2D."""
    y = ops.transpose(x, (0, 3, 1, 2))
    if stride == 1:
        y = ops.conv2d(y, weight, bias, stride=1, pad_mode="pad", padding=1)
    else:
        y = ops.pad(y, (0, 1, 0, 1))
        y = ops.conv2d(y, weight, bias, stride=2, pad_mode="valid")
    return ops.transpose(y, (0, 2, 3, 1))


def temporal_conv3_native(x, weight, bias, stride: int = 1):
    """Temporal conv with replicate padding via ops.conv2d over (B, C, T, H*W) with a (3, 1) kernel."""
    b, t, h, w, c = x.shape
    c_out = weight.shape[0]
    flat = x.reshape(b, t, h * w, c)
    pieces = [flat[:, :1], flat, flat[:, t - 1 :]]
    if stride == 2 and (t + 2) % 2:
        pieces.append(flat[:, t - 1 :])
    y = ops.transpose(mint.cat(pieces, 1), (0, 3, 1, 2))
    y = ops.conv2d(y, weight.reshape(c_out, c, 3, 1), bias, stride=(stride, 1), pad_mode="valid")
    t_out = t if stride == 1 else (t + 1) // 2
    y = ops.transpose(y, (0, 2, 3, 1))[:, :t_out]
    return y.reshape(b, t_out, h, w, c_out)


def default_backend() -> str:
    """`native` on Ascend (its convolutions are fast), `matmul_autograd` elsewhere: as fast a training step as
    the hand-written backward passes, with less memory and a faster compile (measured, CHANGELOG 0.2.1)."""
    return "native" if ms.get_context("device_target") == "Ascend" else "matmul_autograd"
