"""The TAE model: shapes for any frame count, frame-wise behaviour at initialisation, backend and mode
equivalences, gradient checkpointing, input validation and configuration."""

import subprocess
import sys
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mg_tae import TAEConfig, TemporalAutoencoder
from mg_tae.model import DiagonalGaussian

RNG = np.random.default_rng(0)
MICRO = dict(  # two levels, one temporal level: every layer type, fast to compile
    block_out_channels=(8, 16),
    temporal_downsample_levels=(0,),
    temporal_upsample_levels=(0,),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=4,
)


def _video(shape, seed=0):
    return Tensor(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


@pytest.fixture(scope="module")
def tiny():
    return TemporalAutoencoder(TAEConfig.tiny(), seed=0)


def _perturb_temporal(model, scale=0.1, seed=1):
    rng = np.random.default_rng(seed)
    for name, p in model.parameters_and_names():
        if ".temporal." in name or "temporal_" in name:
            value = p.asnumpy()
            p.set_data(Tensor((value + scale * rng.standard_normal(value.shape)).astype(np.float32)))


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 17])
def test_latent_length_is_ceil_t_over_8_and_decode_returns_requested_frames(tiny, frames):
    x = _video((2, 3, frames, 16, 24))
    post = tiny.encode(x)
    t_lat = -(-frames // 8)
    assert post.mean.shape == post.logvar.shape == (2, 16, t_lat, 2, 3)
    assert tiny.latent_shape(frames, 16, 24) == (16, t_lat, 2, 3)
    assert tiny.decode(post.mean).shape == (2, 3, 8 * t_lat, 16, 24)
    assert tiny.decode(post.mean, num_frames=frames).shape == (2, 3, frames, 16, 24)
    recon, mean, _ = tiny(x)
    assert recon.shape == x.shape
    np.testing.assert_allclose(mean.asnumpy(), post.mean.asnumpy(), rtol=1e-5, atol=1e-6)


def test_decode_rejects_frame_counts_of_another_latent_length(tiny):
    z = Tensor(np.zeros((1, 16, 2, 2, 2), np.float32))
    for bad in (8, 17, 0):
        with pytest.raises(ValueError, match=r"num_frames=.*expected 9\.\.16"):
            tiny.decode(z, num_frames=bad)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((1, 3, 1, 16, 16), np.float32), "mindspore Tensor"),
        (Tensor(np.zeros((1, 3, 16, 16), np.float32)), "rank 5"),
        (Tensor(np.zeros((1, 4, 1, 16, 16), np.float32)), "3 channels"),
        (Tensor(np.zeros((1, 3, 1, 16, 16), np.int32)), "floating-point"),
        (Tensor(np.zeros((1, 3, 1, 20, 16), np.float32)), "multiples of 8"),
    ],
)
def test_bad_pixels_raise_value_errors(tiny, x, message):
    with pytest.raises(ValueError, match=message):
        tiny.encode(x)


def test_bad_latents_raise_value_errors(tiny):
    with pytest.raises(ValueError, match=r"\(B, 16, T, h, w\)"):
        tiny.decode(Tensor(np.zeros((1, 4, 1, 2, 2), np.float32)))


def test_fresh_tae_is_the_2d_vae_frame_by_frame(tiny):
    """Temporal layers start as identities: latent frame j is the image encoding of frame 8j, and every
    latent frame decodes to 8 copies of its image decoding."""
    video = _video((1, 3, 17, 16, 16), seed=3)
    means = tiny.encode(video).mean.asnumpy()
    for j in range(3):
        image = tiny.encode(video[:, :, 8 * j : 8 * j + 1]).mean.asnumpy()
        np.testing.assert_allclose(means[:, :, j], image[:, :, 0], rtol=1e-4, atol=1e-5)
    z = Tensor(means)
    frames = tiny.decode(z).asnumpy()
    for j in range(3):
        image = tiny.decode(z[:, :, j : j + 1], num_frames=1).asnumpy()
        np.testing.assert_allclose(
            frames[:, :, 8 * j : 8 * j + 8], np.repeat(image, 8, axis=2), rtol=1e-4, atol=1e-5
        )


def test_matmul_backend_matches_native_convolutions():
    config = TAEConfig.tiny()
    ours = TemporalAutoencoder(config, seed=0)
    _perturb_temporal(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = TemporalAutoencoder(TAEConfig.tiny(conv_backend="native"), seed=0)
    native.load_state_dict(ours.state_dict())
    x = _video((1, 3, 9, 16, 16))
    z_ours, z_native = ours.encode(x).mean, native.encode(x).mean
    np.testing.assert_allclose(z_ours.asnumpy(), z_native.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        ours.decode(z_ours).asnumpy(), native.decode(z_ours).asnumpy(), rtol=1e-4, atol=1e-5
    )


def _loss_and_grads(model, x, noise, jit=False):
    def loss(inp):
        recon, mean, logvar = model(inp, noise)
        return (recon * recon).mean() + (mean * mean).mean() + 0.1 * logvar.mean()

    fn = ms.value_and_grad(loss, grad_position=0, weights=model.trainable_params())
    if jit:
        fn = ms.jit(fn)
    value, (gx, gw) = fn(x)
    return (
        float(value),
        gx.asnumpy(),
        {p.name: g.asnumpy() for p, g in zip(model.trainable_params(), gw, strict=True)},
    )


def _assert_grads_close(a, b, rtol=1e-4):
    value_a, gx_a, gw_a = a
    value_b, gx_b, gw_b = b
    assert value_a == pytest.approx(value_b, rel=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, atol=rtol * np.abs(gx_b).max())
    scale = max(np.abs(g).max() for g in gw_b.values())
    assert set(gw_a) == set(gw_b)
    for name in gw_b:  # to_k.bias has an exactly-zero true gradient: compare on the global scale
        np.testing.assert_allclose(gw_a[name], gw_b[name], atol=rtol * scale, err_msg=name)


def test_gradients_match_native_convolutions():
    ours = TemporalAutoencoder(TAEConfig.tiny(**MICRO), seed=0)
    _perturb_temporal(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="native"), seed=0)
    native.load_state_dict(ours.state_dict())
    x = _video((1, 3, 3, 8, 8))
    noise = _video((1, 4, 2, 4, 4), seed=2)
    _assert_grads_close(_loss_and_grads(ours, x, noise), _loss_and_grads(native, x, noise))


def test_hand_written_conv_backward_matches_autograd_backend():
    """conv_backend="matmul" (hand-written conv backward passes) and "matmul_autograd" (the same forward through
    autograd, the CPU default) give the same loss and gradients for every parameter of the whole TAE. (Under jit:
    the next test checks jit == PyNative for the default, test_conv_backward.py each hand-written backward.)"""
    fast = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="matmul"), seed=0)
    _perturb_temporal(fast)
    plain = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="matmul_autograd"), seed=0)
    plain.load_state_dict(fast.state_dict())
    x = _video((1, 3, 5, 8, 8))
    noise = _video((1, 4, 3, 4, 4), seed=2)  # ceil(5 / 2) latent frames
    _assert_grads_close(_loss_and_grads(fast, x, noise), _loss_and_grads(plain, x, noise))


def test_jit_matches_pynative_forward_and_gradients():
    model = TemporalAutoencoder(TAEConfig.tiny(**MICRO), seed=0)
    _perturb_temporal(model)
    x = _video((1, 3, 3, 8, 8))
    noise = _video((1, 4, 2, 4, 4), seed=2)
    _assert_grads_close(
        _loss_and_grads(model, x, noise, jit=True), _loss_and_grads(model, x, noise), rtol=1e-5
    )


IMAGE_GRADIENTS = """
import sys
sys.path.insert(0, sys.argv[1])
import test_model as t
model = t.TemporalAutoencoder(t.TAEConfig.tiny(**t.MICRO), seed=0)
x, noise = t._video((1, 3, 1, 8, 8)), t._video((1, 4, 1, 4, 4), seed=2)
eager = t._loss_and_grads(model, x, noise)
t._assert_grads_close(t._loss_and_grads(model, x, noise, jit=True), eager, rtol=1e-5)
"""


def test_image_gradients_in_a_fresh_process_match_jit():
    """PyNative differentiated a softmax over one key (the temporal attention of a single frame) wrongly and
    corrupted the spatial attention's q/k gradients (MindSpore 2.10 CPU; jit matched finite differences). Only a
    fresh process shows it: an earlier multi-frame backward in the same process hides it."""
    result = subprocess.run(
        [sys.executable, "-c", IMAGE_GRADIENTS, str(Path(__file__).parent)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    "backend, jit",
    [("matmul_autograd", False), ("matmul", False), ("matmul_autograd", True), ("native", False)],
)
def test_images_take_a_one_frame_path_equal_to_a_constant_clip(backend, jit):
    """A single frame skips the temporal convs' padding frames and the decoder's temporal upsampling. A constant
    clip runs the general path and must give the same latents, decoded frames, loss and gradients."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # native convs on CPU warn that they are slow
        model = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend=backend), seed=0)
    _perturb_temporal(model)
    image = _video((2, 3, 1, 8, 8))
    clip = Tensor(np.repeat(image.asnumpy(), 2, axis=2))  # MICRO compresses time 2x: one latent frame
    z = model.encode(image).mean
    np.testing.assert_allclose(z.asnumpy(), model.encode(clip).mean.asnumpy(), rtol=1e-5, atol=1e-5)

    frames = model.decode(z).asnumpy()
    general = model.decode(Tensor(np.repeat(z.asnumpy(), 2, axis=2))).asnumpy()  # two latent frames
    assert frames.shape == (2, 3, 2, 8, 8)
    np.testing.assert_allclose(frames, general[:, :, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(frames[:, :, 0], frames[:, :, 1])

    noise = _video((2, 4, 1, 4, 4), seed=2)
    value, gx, gw = _loss_and_grads(model, image, noise, jit=jit)
    value_c, gx_c, gw_c = _loss_and_grads(model, clip, noise, jit=jit)
    _assert_grads_close((value, gx, gw), (value_c, gx_c.sum(axis=2, keepdims=True), gw_c))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    _perturb_temporal(model)
    model.set_train(True)
    x = _video((1, 3, 9, 16, 16))
    noise = _video((1, 16, 2, 2, 2), seed=2)
    plain = _loss_and_grads(model, x, noise)
    model.set_gradient_checkpointing(True)
    checkpointed = _loss_and_grads(model, x, noise)
    model.set_gradient_checkpointing(False)
    _assert_grads_close(checkpointed, plain, rtol=1e-6)


def test_posterior_sampling_kl_and_latent_scaling(tiny):
    mean = RNG.standard_normal((2, 16, 1, 2, 2)).astype(np.float32)
    logvar = (RNG.standard_normal((2, 16, 1, 2, 2)) - 40.0 * (RNG.random((2, 16, 1, 2, 2)) < 0.1)).astype(
        np.float32
    )
    post = DiagonalGaussian(Tensor(mean), Tensor(logvar))
    clamped = np.clip(logvar, -30, 20)
    eps = np.random.default_rng(5).standard_normal(mean.shape)
    np.testing.assert_allclose(
        post.sample(seed=5).asnumpy(), mean + np.exp(0.5 * clamped) * eps, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(post.sample(np.random.default_rng(5)).asnumpy(), post.sample(5).asnumpy())
    assert post.mode() is post.mean
    want_kl = (0.5 * (mean**2 + np.exp(clamped) - 1 - clamped)).reshape(2, -1).sum(1)
    np.testing.assert_allclose(post.kl().asnumpy(), want_kl, rtol=1e-5)
    z = Tensor(mean)
    np.testing.assert_allclose(tiny.scale_latents(z).asnumpy(), (mean - 0.0609) * 1.5305, rtol=1e-6)
    np.testing.assert_allclose(tiny.unscale_latents(tiny.scale_latents(z)).asnumpy(), mean, atol=1e-6)


def test_norm_over_whole_clip_differs_from_per_frame_only_for_videos():
    per_frame = TemporalAutoencoder(TAEConfig.tiny(**MICRO), seed=0)
    whole = TemporalAutoencoder(TAEConfig.tiny(**MICRO, norm_per_frame=False), seed=0)
    image, video = _video((1, 3, 1, 8, 8)), _video((1, 3, 4, 8, 8))
    np.testing.assert_allclose(
        per_frame.encode(image).mean.asnumpy(), whole.encode(image).mean.asnumpy(), atol=1e-5
    )
    assert np.abs(per_frame.encode(video).mean.asnumpy() - whole.encode(video).mean.asnumpy()).max() > 1e-3


def test_config_validation_and_round_trip():
    config = TAEConfig.tiny()
    assert config.spatial_compression == config.temporal_compression == 8
    assert TAEConfig.from_dict(config.to_dict()) == config
    assert TAEConfig().block_out_channels == (128, 256, 512, 512)
    with pytest.raises(ValueError, match="norm_num_groups"):
        TAEConfig(block_out_channels=(30, 60))
    with pytest.raises(ValueError, match="temporal_downsample_levels"):
        TAEConfig(temporal_downsample_levels=(0, 3))
    with pytest.raises(ValueError, match="same length"):
        TAEConfig(temporal_upsample_levels=(0, 1))
    with pytest.raises(ValueError, match="conv_backend"):
        TAEConfig(conv_backend="cuda")
    with pytest.raises(ValueError, match="unknown TAEConfig fields"):
        TAEConfig.from_dict({"base_channels": 3})


def test_native_convolutions_on_cpu_warn_and_default_does_not():
    with pytest.warns(RuntimeWarning, match="ONEDNN_MAX_CPU_ISA"):
        TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="native"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = TemporalAutoencoder(TAEConfig.tiny(**MICRO))
    assert model.backend == "matmul_autograd"
