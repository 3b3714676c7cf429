"""Losses, LPIPS and metrics against independent computations (numpy, PyTorch, scikit-image)."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import save_file

from mg_tae import losses, metrics
from mg_tae.lpips import LPIPS, expected_shapes

RNG = np.random.default_rng(0)


def test_l1_kl_match_numpy():
    a, b = RNG.standard_normal((2, 3, 4, 8, 8)), RNG.standard_normal((2, 3, 4, 8, 8))
    assert np.isclose(
        float(losses.l1_loss(Tensor(a, ms.float32), Tensor(b, ms.float32))), np.abs(a - b).mean(), rtol=1e-5
    )
    mean, logvar = RNG.standard_normal((2, 4, 2, 3, 3)), RNG.standard_normal((2, 4, 2, 3, 3))
    want = (0.5 * (mean**2 + np.exp(logvar) - 1 - logvar)).reshape(2, -1).sum(1).mean()
    got = float(losses.kl_loss(Tensor(mean, ms.float32), Tensor(logvar, ms.float32)))
    assert np.isclose(got, want, rtol=1e-5)
    assert (
        float(
            losses.kl_loss(
                Tensor(np.zeros((1, 2, 1, 2, 2)), ms.float32), Tensor(np.zeros((1, 2, 1, 2, 2)), ms.float32)
            )
        )
        == 0.0
    )


def test_outlier_penalty_matches_loop_and_ignores_inliers():
    z = RNG.standard_normal((2, 3, 2, 6, 6))
    z[0, 1, 1, 2, 3] = 40.0  # one clear outlier
    want = 0.0
    for b in range(2):
        for c in range(3):
            for t in range(2):
                f = z[b, c, t]
                want += np.maximum(np.abs(f - f.mean()) - 3.0 * f.std(), 0).sum()
    want /= z.size
    got = float(losses.outlier_penalty_loss(Tensor(z, ms.float32), r=3.0))
    assert want > 0 and np.isclose(got, want, rtol=1e-4)
    flat = np.tile(np.array([-1.0, 1.0]), 18).reshape(1, 1, 1, 6, 6)  # every value exactly 1 sigma away
    assert float(losses.outlier_penalty_loss(Tensor(flat, ms.float32))) == 0.0


def test_outlier_penalty_paper_form_matches_its_formula_by_loops():
    """1/(HW) sum_ij max(||X_ij - Mean(X)|| - r Std(X), 0) per sample, X_ij the T x C values at (i, j)."""
    z = RNG.standard_normal((2, 3, 2, 5, 4))
    z[1, :, :, 2, 1] += 9.0  # one position far from the rest in every channel and frame
    want = 0.0
    for b in range(2):
        x = z[b]
        mean, std = x.mean(), x.std()
        for i in range(5):
            for j in range(4):
                want += max(np.linalg.norm(x[:, :, i, j] - mean) - 0.5 * std, 0.0) / (5 * 4)
    want /= 2
    got = float(losses.outlier_penalty_loss(Tensor(z, ms.float32), r=0.5, form="paper"))
    assert want > 0 and np.isclose(got, want, rtol=1e-4)
    # the far position dominates the penalty (a norm over T*C = 6 Gaussian values exceeds 3 sigma by chance too)
    with_far = float(losses.outlier_penalty_loss(Tensor(z, ms.float32), r=3.0, form="paper"))
    moved = z.copy()
    moved[1, :, :, 2, 1] -= 9.0
    assert with_far > 4 * float(losses.outlier_penalty_loss(Tensor(moved, ms.float32), form="paper"))
    with pytest.raises(ValueError, match="form must be one of"):
        losses.outlier_penalty_loss(Tensor(z, ms.float32), form="l2")


def _torch_lpips(weights, x, y):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    from mg_tae.lpips import SCALE, SHIFT, VGG16_LAYERS

    def feats(t):
        out = []
        for layer in VGG16_LAYERS:
            if layer is None:
                t = F.max_pool2d(t, 2)
            elif layer == "tap":
                out.append(t)
            else:
                i = layer[0]
                w, b = (
                    torch.from_numpy(weights[f"features.{i}.weight"]),
                    torch.from_numpy(weights[f"features.{i}.bias"]),
                )
                t = F.relu(F.conv2d(t, w, b, padding=1))
        return out

    shift = torch.tensor(SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE).view(1, 3, 1, 1)
    fx, fy = feats((x - shift) / scale), feats((y - shift) / scale)
    total = 0
    for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((a - b) ** 2, torch.from_numpy(weights[f"lin{k}.weight"])).mean((2, 3))[:, 0]
    return total


def test_lpips_matches_torch_and_has_input_gradients(tmp_path):
    torch = pytest.importorskip("torch")
    net = LPIPS.random(seed=1)
    weights = {k: net.weights[net.index[k]].asnumpy() for k in net.names}
    path = tmp_path / "lpips_vgg.safetensors"
    save_file(weights, str(path))
    net = LPIPS.from_safetensors(path)
    x = RNG.uniform(-1, 1, (2, 3, 35, 33)).astype(np.float32)
    y = np.clip(x + 0.2 * RNG.standard_normal(x.shape), -1, 1).astype(np.float32)
    got = net(Tensor(x), Tensor(y)).asnumpy()
    xt = torch.from_numpy(x).requires_grad_(True)
    want = _torch_lpips(weights, xt, torch.from_numpy(y))
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-6)
    assert np.all(net(Tensor(x), Tensor(x)).asnumpy() < 1e-6)
    grad = ms.grad(lambda a: net(a, Tensor(y)).sum())(Tensor(x)).asnumpy()
    want.sum().backward()
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-3, atol=1e-4 * np.abs(xt.grad.numpy()).max())
    video = net(Tensor(np.stack([x, y], 2)), Tensor(np.stack([y, y], 2))).asnumpy()
    np.testing.assert_allclose(video[:, 0], got, rtol=1e-5)
    assert np.all(video[:, 1] < 1e-6) and video.shape == (2, 2)


def test_lpips_file_errors_name_keys(tmp_path):
    weights = {k: np.zeros(s, np.float32) for k, s in expected_shapes().items()}
    del weights["lin3.weight"]
    weights["features.0.weight"] = np.zeros((64, 3, 1, 1), np.float32)
    path = tmp_path / "bad.safetensors"
    save_file(weights, str(path))
    with pytest.raises(ValueError, match=r"lin3\.weight.*features\.0\.weight|features\.0\.weight.*lin3"):
        LPIPS.from_safetensors(path)
    with pytest.raises(FileNotFoundError, match="README"):
        LPIPS.from_safetensors(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("quantize", [False, True])
def test_psnr_ssim_match_scikit_image(quantize):
    skm = pytest.importorskip("skimage.metrics")
    target = RNG.uniform(-1, 1, (2, 3, 3, 20, 24))
    pred = np.clip(target + 0.1 * RNG.standard_normal(target.shape), -1, 1)
    ps, ss = [], []
    for b in range(2):
        for t in range(3):
            p, g = pred[b, :, t], target[b, :, t]
            if quantize:
                p, g = np.round((p + 1) * 127.5).astype(np.uint8), np.round((g + 1) * 127.5).astype(np.uint8)
                rng_ = 255
            else:
                p, g = (p + 1) / 2, (g + 1) / 2
                rng_ = 1.0
            ps.append(skm.peak_signal_noise_ratio(g, p, data_range=rng_))
            ss.append(skm.structural_similarity(g, p, data_range=rng_, channel_axis=0))
    assert np.isclose(metrics.psnr(pred, target, quantize=quantize), np.mean(ps), rtol=1e-6)
    assert np.isclose(metrics.ssim(pred, target, quantize=quantize), np.mean(ss), rtol=1e-6)
    assert metrics.ssim(target, target) == pytest.approx(1.0)
    as_tensors = (Tensor(pred[0], ms.float32), Tensor(target[0], ms.float32))
    assert metrics.psnr(*as_tensors, quantize=quantize) == pytest.approx(np.mean(ps[:3]), rel=1e-4)


def test_metric_shape_errors():
    with pytest.raises(ValueError, match="differ"):
        metrics.psnr(np.zeros((1, 3, 2, 8, 8)), np.zeros((1, 3, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def _moving_square(frames: int = 16, speed: int = 2) -> np.ndarray:
    """(1, 3, T, 32, 48) in [-1, 1]: a white 8x8 square moving right `speed` pixels a frame on black."""
    clip = np.full((1, 3, frames, 32, 48), -1.0, np.float32)
    for t in range(frames):
        clip[:, :, t, 12:20, 2 + speed * t : 10 + speed * t] = 1.0
    return clip


def test_largest_step_share_tells_smooth_motion_from_static_then_jump():
    smooth = _moving_square()
    # every step uncovers one 2x8 strip and covers another (each pixel changes by 1 on the [0, 1] scale)
    np.testing.assert_allclose(metrics.frame_changes(smooth)[0], np.full(15, 2 * (2 * 8) / (32 * 48)))
    np.testing.assert_allclose(metrics.largest_step_share(smooth), [1 / 15])
    # a decoder that repeats each latent frame's first frame over its 8 frames: one change, between the groups
    repeated = smooth[:, :, [8 * (t // 8) for t in range(16)]]
    np.testing.assert_allclose(metrics.largest_step_share(repeated), [1.0])
    still = np.zeros((2, 3, 16, 8, 8), np.float32)
    assert np.isnan(metrics.largest_step_share(still)).all()  # nothing moves: no share
    clips = np.concatenate([smooth, repeated])
    np.testing.assert_allclose(metrics.largest_step_share(clips), [1 / 15, 1.0])
    np.testing.assert_allclose(metrics.largest_step_share(smooth[0]), [1 / 15])  # (C, T, H, W) too


def test_scores_by_position_within_a_latent_frame():
    scores = np.arange(32, dtype=float)  # two clips of 16 frames, concatenated
    by_position = metrics.by_position(scores, frames_per_clip=16, group=8)
    # position p: frames p, p + 8 of clip one (p, p + 8) and of clip two (16 + p, 24 + p)
    np.testing.assert_allclose(by_position, [np.mean([p, p + 8, 16 + p, 24 + p]) for p in range(8)])
    assert np.isnan(metrics.by_position(np.ones(4), frames_per_clip=4, group=8)[4:]).all()
