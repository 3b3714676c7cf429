"""The TAE model: shapes for any frame count, frame-wise behaviour at initialisation, backend and mode
equivalences (the pixel shortcut's too), gradient checkpointing, input validation and configuration."""

import dataclasses
import warnings

import numpy as np
import pytest
from mindspore import Tensor

from mg_tae import TAEConfig, TemporalAutoencoder
from mg_tae.model import DiagonalGaussian
from mg_testing import (
    Tolerance,
    assert_gradients_close,
    check_gradient_checkpointing,
    check_jit_matches_pynative,
    check_rejects_bad_inputs,
    loss_and_grads,
    run_in_fresh_process,
)

RNG = np.random.default_rng(0)
MICRO = dict(  # two levels, one temporal level: every layer type, fast to compile
    block_out_channels=(8, 16),
    temporal_downsample_levels=(0,),
    temporal_upsample_levels=(0,),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=4,
)


@pytest.fixture(scope="module")
def tiny():
    return TemporalAutoencoder(TAEConfig.tiny(), seed=0)


def training_loss(outputs):
    """A loss over all three outputs of the training forward `model(x, noise)`."""
    recon, mean, logvar = outputs
    return (recon * recon).mean() + (mean * mean).mean() + 0.1 * logvar.mean()


def grads_of(model, x, noise, jit=False):
    """Loss and gradients (parameters and pixels) of the training forward, in PyNative or under jit."""
    return loss_and_grads(model, (x, noise), loss=training_loss, grad_inputs=(0,), jit=jit)


def tolerances(rtol):
    """Loss within rtol 1e-5; gradients within `rtol` of the largest pixel gradient and, for parameters, of the
    largest parameter gradient of all (to_k.bias has an exactly-zero true gradient: compare on the global scale)."""
    return dict(
        loss_tol=Tolerance(rtol=1e-5), grad_tol=Tolerance(rtol=1e-7, of_max=rtol, across_parameters=True)
    )


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 17])
def test_latent_length_is_ceil_t_over_8_and_decode_returns_requested_frames(tiny, frames, video):
    x = video((2, 3, frames, 16, 24))
    post = tiny.encode(x)
    t_lat = -(-frames // 8)
    assert post.mean.shape == post.logvar.shape == (2, 16, t_lat, 2, 3)
    assert tiny.latent_shape(frames, 16, 24) == (16, t_lat, 2, 3)
    assert tiny.decode(post.mean).shape == (2, 3, 8 * t_lat, 16, 24)
    assert tiny.decode(post.mean, num_frames=frames).shape == (2, 3, frames, 16, 24)
    recon, mean, _ = tiny(x)
    assert recon.shape == x.shape
    np.testing.assert_allclose(mean.asnumpy(), post.mean.asnumpy(), rtol=1e-5, atol=1e-6)


BAD_PIXELS = [
    ((np.zeros((1, 3, 1, 16, 16), np.float32),), ValueError, "mindspore Tensor"),
    ((Tensor(np.zeros((1, 3, 16, 16), np.float32)),), ValueError, "rank 5"),
    ((Tensor(np.zeros((1, 4, 1, 16, 16), np.float32)),), ValueError, "3 channels"),
    ((Tensor(np.zeros((1, 3, 1, 16, 16), np.int32)),), ValueError, "floating-point"),
    ((Tensor(np.zeros((1, 3, 1, 20, 16), np.float32)),), ValueError, "multiples of 8"),
]


def test_bad_pixels_raise_value_errors(tiny, video):
    check_rejects_bad_inputs(tiny.encode, BAD_PIXELS, valid=(video((1, 3, 1, 16, 16)),))


def test_bad_latents_and_frame_counts_raise_value_errors(tiny):
    z = Tensor(np.zeros((1, 16, 2, 2, 2), np.float32))

    def decode(latents, num_frames=None):
        return tiny.decode(latents, num_frames=num_frames)

    frames = r"num_frames=.*expected 9\.\.16"
    bad = [((z, n), ValueError, frames) for n in (8, 17, 0)]
    bad.append(((Tensor(np.zeros((1, 4, 1, 2, 2), np.float32)),), ValueError, r"\(B, 16, T, h, w\)"))
    check_rejects_bad_inputs(decode, bad, valid=(z, 9))


def test_fresh_tae_is_the_2d_vae_frame_by_frame(tiny, video):
    """Temporal layers start as identities: latent frame j is the image encoding of frame 8j, and every
    latent frame decodes to 8 copies of its image decoding."""
    clip = video((1, 3, 17, 16, 16), seed=3)
    means = tiny.encode(clip).mean.asnumpy()
    for j in range(3):
        image = tiny.encode(clip[:, :, 8 * j : 8 * j + 1]).mean.asnumpy()
        np.testing.assert_allclose(means[:, :, j], image[:, :, 0], rtol=1e-4, atol=1e-5)
    z = Tensor(means)
    frames = tiny.decode(z).asnumpy()
    for j in range(3):
        image = tiny.decode(z[:, :, j : j + 1], num_frames=1).asnumpy()
        np.testing.assert_allclose(
            frames[:, :, 8 * j : 8 * j + 8], np.repeat(image, 8, axis=2), rtol=1e-4, atol=1e-5
        )


def test_matmul_backend_matches_native_convolutions(video, perturb_temporal):
    config = TAEConfig.tiny()
    ours = TemporalAutoencoder(config, seed=0)
    perturb_temporal(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = TemporalAutoencoder(TAEConfig.tiny(conv_backend="native"), seed=0)
    native.load_state_dict(ours.state_dict())
    x = video((1, 3, 9, 16, 16))
    z_ours, z_native = ours.encode(x).mean, native.encode(x).mean
    np.testing.assert_allclose(z_ours.asnumpy(), z_native.asnumpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        ours.decode(z_ours).asnumpy(), native.decode(z_ours).asnumpy(), rtol=1e-4, atol=1e-5
    )


def test_gradients_match_native_convolutions(video, perturb_temporal):
    ours = TemporalAutoencoder(TAEConfig.tiny(**MICRO), seed=0)
    perturb_temporal(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="native"), seed=0)
    native.load_state_dict(ours.state_dict())
    x = video((1, 3, 3, 8, 8))
    noise = video((1, 4, 2, 4, 4), seed=2)
    assert_gradients_close(grads_of(ours, x, noise), grads_of(native, x, noise), **tolerances(1e-4))


def test_hand_written_conv_backward_matches_autograd_backend(video, perturb_temporal):
    """conv_backend="matmul" (hand-written conv backward passes) and "matmul_autograd" (the same forward through
    autograd, the CPU default) give the same loss and gradients for every parameter of the whole TAE. (Under jit:
    the next test checks jit == PyNative for the default, test_conv_backward.py each hand-written backward.)"""
    fast = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="matmul"), seed=0)
    perturb_temporal(fast)
    plain = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend="matmul_autograd"), seed=0)
    plain.load_state_dict(fast.state_dict())
    x = video((1, 3, 5, 8, 8))
    noise = video((1, 4, 3, 4, 4), seed=2)  # ceil(5 / 2) latent frames
    assert_gradients_close(grads_of(fast, x, noise), grads_of(plain, x, noise), **tolerances(1e-4))


@pytest.mark.parametrize(
    "frames, shortcut, perturbed",
    [(3, False, True), (1, True, False), (3, True, False)],
    ids=["video", "image-with-pixel-shortcut", "video-with-pixel-shortcut"],
)
def test_jit_matches_pynative_forward_and_gradients(frames, shortcut, perturbed, video, perturb_temporal):
    model = TemporalAutoencoder(TAEConfig.tiny(**MICRO, pixel_shortcut=shortcut), seed=0)
    if perturbed:
        perturb_temporal(model)
    x = video((1, 3, frames, 8, 8))
    noise = video((1, 4, -(-frames // 2), 4, 4), seed=2)
    check_jit_matches_pynative(model, (x, noise), loss=training_loss, grad_inputs=(0,), **tolerances(1e-5))


def image_gradients_jit_vs_pynative(x, noise):
    """Run by the next test in a fresh process: PyNative gradients first, then jit."""
    model = TemporalAutoencoder(TAEConfig.tiny(**MICRO), seed=0)
    check_jit_matches_pynative(
        model, (Tensor(x), Tensor(noise)), loss=training_loss, grad_inputs=(0,), **tolerances(1e-5)
    )


def test_image_gradients_in_a_fresh_process_match_jit(video):
    """PyNative differentiated a softmax over one key (the temporal attention of a single frame) wrongly and
    corrupted the spatial attention's q/k gradients (MindSpore 2.10 CPU; jit matched finite differences). Only a
    fresh process shows it: an earlier multi-frame backward in the same process hides it."""
    x, noise = video((1, 3, 1, 8, 8)), video((1, 4, 1, 4, 4), seed=2)
    run_in_fresh_process(image_gradients_jit_vs_pynative, x.asnumpy(), noise.asnumpy())


@pytest.mark.parametrize(
    "backend, jit",
    [("matmul_autograd", False), ("matmul", False), ("matmul_autograd", True), ("native", False)],
)
def test_images_take_a_one_frame_path_equal_to_a_constant_clip(backend, jit, video, perturb_temporal):
    """A single frame skips the temporal convs' padding frames and the decoder's temporal upsampling. A constant
    clip runs the general path and must give the same latents, decoded frames, loss and gradients."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # native convs on CPU warn that they are slow
        model = TemporalAutoencoder(TAEConfig.tiny(**MICRO, conv_backend=backend), seed=0)
    perturb_temporal(model)
    image = video((2, 3, 1, 8, 8))
    clip = Tensor(np.repeat(image.asnumpy(), 2, axis=2))  # MICRO compresses time 2x: one latent frame
    z = model.encode(image).mean
    np.testing.assert_allclose(z.asnumpy(), model.encode(clip).mean.asnumpy(), rtol=1e-5, atol=1e-5)

    frames = model.decode(z).asnumpy()
    general = model.decode(Tensor(np.repeat(z.asnumpy(), 2, axis=2))).asnumpy()  # two latent frames
    assert frames.shape == (2, 3, 2, 8, 8)
    np.testing.assert_allclose(frames, general[:, :, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(frames[:, :, 0], frames[:, :, 1])

    noise = video((2, 4, 1, 4, 4), seed=2)
    of_image = grads_of(model, image, noise, jit=jit)
    of_clip = grads_of(model, clip, noise, jit=jit)
    summed = dataclasses.replace(of_clip, inputs=(of_clip.inputs[0].sum(axis=2, keepdims=True),))
    assert_gradients_close(of_image, summed, **tolerances(1e-4))


def test_gradient_checkpointing_gives_the_same_gradients(video, perturb_temporal):
    def make_model():
        model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
        perturb_temporal(model)
        model.set_train(True)  # the TAE recomputes only while training
        return model

    x = video((1, 3, 9, 16, 16))
    noise = video((1, 16, 2, 2, 2), seed=2)
    check_gradient_checkpointing(
        make_model, (x, noise), loss=training_loss, grad_inputs=(0,), **tolerances(1e-6)
    )


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


def test_norm_over_whole_clip_differs_from_per_frame_only_for_videos(video):
    per_frame = TemporalAutoencoder(TAEConfig.tiny(**MICRO), seed=0)
    whole = TemporalAutoencoder(TAEConfig.tiny(**MICRO, norm_per_frame=False), seed=0)
    image, clip = video((1, 3, 1, 8, 8)), video((1, 3, 4, 8, 8))
    np.testing.assert_allclose(
        per_frame.encode(image).mean.asnumpy(), whole.encode(image).mean.asnumpy(), atol=1e-5
    )
    assert np.abs(per_frame.encode(clip).mean.asnumpy() - whole.encode(clip).mean.asnumpy()).max() > 1e-3


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
