"""Convolutions of the TAE on channels-last tensors, built on one large matmul per conv (the CPU fast path).

MindSpore's CPU convolution picks a reference oneDNN kernel on AVX-512 machines (~0.5 GFLOP/s), and its strided
copies are slow too. So every conv here is written as: a few cheap contiguous copies that build one flat
"source" matrix of rows (pixels) by channels, then one matmul over K shifted row windows of it concatenated on
channels (im2col by contiguous row slicing). Borders are handled by zero rows between frames and by column-masked
copies, never by strided padding. Large convs run in row chunks to bound the im2col block.

Weights keep the standard layouts, (C_out, C_in, kh, kw) for spatial and (C_out, C_in, kt) for temporal convs, so
the same parameters drive MindSpore's native convolutions on Ascend (`backend="native"`).
"""

from __future__ import annotations

import mindspore as ms
from mindspore import mint, ops

# Upper bound on the elements of one im2col block; larger convs are computed in row chunks (256 MiB in fp32).
MAX_WINDOW_ELEMENTS = 64 * 2**20


def smaller(a: int, b: int) -> int:
    """min() of two ints (the builtin min/max do not compile in some MindSpore graph contexts)."""
    return a if a < b else b


def shifted_matmul(src, weight, offsets, rows: int):
    """out[r] = concat_k(src[r + offsets[k]]) @ weight for r in [0, rows); weight is (K * C_in, C_out).

    The row windows are contiguous slices of `src`, so building them is cheap. Rows are processed in chunks
    that keep the window block under `MAX_WINDOW_ELEMENTS`. Autograd handles the backward pass (a custom
    backward measured no faster and mis-assigned weight gradients under `mindspore.jit`).
    """
    width = src.shape[1] * len(offsets)
    step = smaller(rows, MAX_WINDOW_ELEMENTS // width)
    step = step if step > 0 else 1
    outs = []
    for start in range(0, rows, step):
        n = smaller(step, rows - start)
        cols = mint.cat([src[start + o : start + o + n] for o in offsets], -1)
        outs.append(mint.matmul(cols, weight))
    return outs[0] if len(outs) == 1 else mint.cat(outs, 0)


def _zeros(rows: int, channels: int, dtype):
    return mint.zeros((rows, channels), dtype=dtype)


def _pad_rows_after_frames(x, frames: int, row_width: int, channels: int):
    """Append one zero image row (row_width = W * C values) after every frame; return flat (pixels, channels)."""
    zero = mint.zeros((frames, 1, row_width), dtype=x.dtype)
    return mint.cat([x.reshape(frames, -1, row_width), zero], 1).reshape(-1, channels)


def _mask_column(x, n_rows: int, width: int, channels: int, column: int):
    """Copy of x (n_rows, width, channels) with one column (0 or width-1) set to zero, via contiguous concat."""
    x = x.reshape(n_rows, width, channels)
    zero = mint.zeros((n_rows, 1, channels), dtype=x.dtype)
    if width == 1:
        return zero
    if column == 0:
        return mint.cat([zero, x[:, 1:]], 1)
    return mint.cat([x[:, : width - 1], zero], 1)


_MATMUL_TA = ops.MatMul(transpose_a=True)
_MATMUL_TB = ops.MatMul(transpose_b=True)


def _tap_major(weight, taps: int):
    """(C_out, C_in, *kernel) -> (taps * C_in, C_out) with rows ordered (tap, c_in).

    A 4D transpose is a slow strided copy on CPU; a transposing matmul with the identity plus a row gather is
    exact and about twice as fast, which matters because weights are relaid on every call.
    """
    c_out, c_in = weight.shape[0], weight.shape[1]
    flat = weight.reshape(c_out, c_in * taps)
    rows = _MATMUL_TA(flat, ops.eye(c_out, c_out, weight.dtype))  # (c_in * taps, c_out), rows (c_in, tap)
    order = (ops.arange(taps).reshape(taps, 1) + ops.arange(c_in).reshape(1, c_in) * taps).reshape(-1)
    return ops.gather(rows, order, 0)


def spatial_weight_matrix(weight):
    """(C_out, C_in, 3, 3) -> (9 * C_in, C_out) with taps in row-major (di, dj) order."""
    return _tap_major(weight, 9)


def temporal_weight_matrix(weight):
    """(C_out, C_in, 3) -> (3 * C_in, C_out) with taps in time order (t-1, t, t+1)."""
    return _tap_major(weight, 3)


def conv3x3_rows(x, weight, bias):
    """3x3 conv, stride 1, zero padding 1, on x (N, H, W, C) channels-last; weight (C_out, C, 3, 3)."""
    n, h, w, c = x.shape
    c_out = weight.shape[0]
    dtype = x.dtype
    # Three column variants: source column W-1 zeroed (read by dj=-1), unchanged (dj=0), column 0 zeroed (dj=+1).
    left = _mask_column(x, n * h, w, c, w - 1)
    right = _mask_column(x, n * h, w, c, 0)
    variants = [_pad_rows_after_frames(v, n, w * c, c) for v in (left, x, right)]
    frame_rows = n * (h + 1) * w
    gap = w + 1
    pieces = [_zeros(gap, c, dtype)]
    for v in variants:
        pieces += [v, _zeros(gap, c, dtype)]
    src = mint.cat(pieces, 0)
    offsets = []
    for di in (-1, 0, 1):
        for k, dj in enumerate((-1, 0, 1)):
            offsets.append(gap + k * (frame_rows + gap) + di * w + dj)
    y = shifted_matmul(src, spatial_weight_matrix(weight), tuple(offsets), frame_rows)
    y = ops.bias_add(y, bias) if bias is not None else y
    return y.reshape(n, h + 1, w * c_out)[:, :h].reshape(n, h, w, c_out)


def conv3x3_stride2_rows(x, weight, bias):
    """3x3 conv, stride 2, zero padding right/bottom 1 (diffusers' Downsample2D), on x (N, H, W, C), H and W even."""
    n, h, w, c = x.shape
    c_out = weight.shape[0]
    dtype = x.dtype
    hh, wh = h // 2, w // 2
    pairs = x.reshape(n, hh, 2, wh * 2 * c)  # row parity q; columns paired into 2C channels (p, c)
    even = pairs[:, :, 0]
    odd = pairs[:, :, 1]
    c2 = 2 * c
    variants = []
    for v in (even, odd):
        shifted_src = _mask_column(v, n * hh, wh, c2, 0)  # read at j'+1: zero column 0 against row wrap
        variants += [
            _pad_rows_after_frames(v.reshape(n, hh, wh * c2), n, wh * c2, c2),
            _pad_rows_after_frames(shifted_src, n, wh * c2, c2),
        ]
    frame_rows = n * (hh + 1) * wh
    gap = wh + 1  # zero rows after each variant: reads past a variant's last frame must see zeros
    pieces = []
    for v in variants:
        pieces += [v, _zeros(gap, c2, dtype)]
    src = mint.cat(pieces, 0)
    e, e_r, o, o_r = (i * (frame_rows + gap) for i in range(4))
    # Kernel rows a = 0 (even rows), 2 (next even row), 1 (odd rows); the largest offset comes last.
    offsets = (e, e_r + 1, e + wh, e_r + wh + 1, o, o_r + 1)
    wt = ops.transpose(weight, (2, 3, 1, 0))  # (3, 3, C, C_out)
    zero = mint.zeros((c, c_out), dtype=weight.dtype)
    blocks = []
    for a in (0, 2, 1):
        blocks += [wt[a, 0], wt[a, 1], wt[a, 2], zero]
    y = shifted_matmul(src, mint.cat(blocks, 0), offsets, frame_rows)
    y = ops.bias_add(y, bias) if bias is not None else y
    return y.reshape(n, hh + 1, wh * c_out)[:, :hh].reshape(n, hh, wh, c_out)


def _time_rows(frames_src, weight_mat, offsets, b: int, t_src: int, t_out: int, hw: int):
    """Run a temporal shifted matmul whose source holds b clips of t_src frames (hw rows each), keep t_out frames."""
    c_out = weight_mat.shape[1]
    rows = ((b - 1) * t_src + t_out) * hw
    y = shifted_matmul(frames_src, weight_mat, offsets, rows)
    if b == 1:
        return y
    pad = mint.zeros(((t_src - t_out) * hw, c_out), dtype=y.dtype)
    y = mint.cat([y, pad], 0).reshape(b, t_src, hw * c_out)[:, :t_out]
    return y.reshape(-1, c_out)


def temporal_conv3_rows(x, weight, bias):
    """Temporal conv, kernel 3, stride 1, replicate padding 1, on x (B, T, H, W, C); weight (C_out, C, 3)."""
    b, t, h, w, c = x.shape
    c_out = weight.shape[0]
    hw = h * w
    flat = x.reshape(b, t, hw * c)
    padded = mint.cat([flat[:, :1], flat, flat[:, t - 1 :]], 1).reshape(-1, c)
    offsets = (0, hw, 2 * hw)
    y = _time_rows(padded, temporal_weight_matrix(weight), offsets, b, t + 2, t, hw)
    y = ops.bias_add(y, bias) if bias is not None else y
    return y.reshape(b, t, h, w, c_out)


def temporal_conv3_stride2_rows(x, weight, bias):
    """Temporal conv, kernel 3, stride 2, replicate padding 1: T -> ceil(T / 2); x (B, T, H, W, C)."""
    b, t, h, w, c = x.shape
    c_out = weight.shape[0]
    hw = h * w
    flat = x.reshape(b, t, hw * c)
    pieces = [flat[:, :1], flat, flat[:, t - 1 :]]
    length = t + 2
    if length % 2:
        pieces.append(flat[:, t - 1 :])
        length += 1
    half = length // 2
    t_out = half - 1  # == ceil(t / 2)
    pairs = mint.cat(pieces, 1).reshape(b, half, 2, hw * c)
    even = pairs[:, :, 0].reshape(-1, c)
    odd = pairs[:, :, 1].reshape(-1, c)
    n_even = b * half * hw
    src = mint.cat([even, odd], 0)
    offsets = (0, hw, n_even)  # taps xp[2t], xp[2t + 2], xp[2t + 1]: the largest offset last
    taps = temporal_weight_matrix(weight)
    taps = mint.cat([taps[:c], taps[2 * c :], taps[c : 2 * c]], 0)
    y = _time_rows(src, taps, offsets, b, half, t_out, hw)
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
    """`native` on Ascend (its convolutions are fast), `matmul` elsewhere."""
    return "native" if ms.get_context("device_target") == "Ascend" else "matmul"
