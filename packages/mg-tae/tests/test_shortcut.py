"""The pixel shortcut (TAEConfig.pixel_shortcut): what it adds to the latent means and to the decoded pixels,
computed independently with numpy block means and a textbook bilinear resize; its exact round trip on flat
clips; tiled == untiled; and configuration checks. (jit == PyNative with the shortcut: test_model.py.)"""

import numpy as np
import pytest
from mindspore import Tensor

from mg_tae import TAEConfig, TemporalAutoencoder
from mg_tae.shortcut import PixelShortcut


def _pair(**overrides):
    """The same TAE (same seed, so the same weights) without and with the shortcut."""
    plain = TemporalAutoencoder(TAEConfig.tiny(**overrides), seed=0)
    short = TemporalAutoencoder(TAEConfig.tiny(**overrides, pixel_shortcut=True), seed=0)
    return plain, short


def _block_means(x: np.ndarray, t_cell: int, s_cell: int) -> np.ndarray:
    """(B, C, T, H, W) -> (B, C, T', h, w) means over cells, the last cell's missing frames = the last frame."""
    b, c, t, h, w = x.shape
    per = 1 if t == 1 else t_cell
    cells = -(-t // per)
    frames = [x[:, :, min(i, t - 1)] for i in range(cells * per)]
    padded = np.stack(frames, axis=2)
    return padded.reshape(b, c, cells, per, h // s_cell, s_cell, w // s_cell, s_cell).mean(axis=(3, 5, 7))


def test_the_shortcut_adds_no_parameters():
    plain, short = _pair()
    assert set(plain.state_dict()) == set(short.state_dict())


@pytest.mark.parametrize("frames", [1, 16, 12])
def test_encoder_adds_block_means_to_the_latent_means_only(frames, video):
    plain, short = _pair()
    x = video((2, 3, frames, 16, 24))
    added = short.encode_moments(x).asnumpy() - plain.encode_moments(x).asnumpy()
    means = _block_means(x.asnumpy(), 8, 8)  # (2, 3, T', 2, 3)
    carried = means[:, [k % 3 for k in range(16)]]  # latent channel k carries pixel channel k mod 3
    np.testing.assert_allclose(added[:, :16], carried, atol=2e-6)
    np.testing.assert_array_equal(added[:, 16:], 0.0)  # logvar untouched


def _bilinear_x8(a: np.ndarray, axis: int) -> np.ndarray:
    """Resize one axis x8 the textbook way: sample at (u + 0.5) / 8 - 0.5, clamped, between the two nearest."""
    n = a.shape[axis]
    src = np.clip((np.arange(8 * n) + 0.5) / 8 - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - frac) + np.take(a, hi, axis) * frac


@pytest.mark.parametrize("latent_frames, size", [(1, (2, 3)), (2, (3, 1))])
def test_decoder_adds_the_mean_of_each_colours_latent_channels_bilinear_in_space(latent_frames, size, video):
    plain, short = _pair()
    z = video((1, 16, latent_frames, *size), seed=3)
    added = short.decode(z).asnumpy() - plain.decode(z).asnumpy()
    zn = z.asnumpy()
    colour = np.stack([zn[:, c::3].mean(axis=1) for c in range(3)], axis=1)  # (1, 3, T', h, w)
    expected = _bilinear_x8(_bilinear_x8(colour, 3), 4).repeat(8, axis=2)
    assert added.shape == expected.shape == (1, 3, 8 * latent_frames, 8 * size[0], 8 * size[1])
    np.testing.assert_allclose(added, expected, atol=1e-5)


def test_shortcut_alone_round_trips_spatially_flat_clips():
    """Flat colours (one per clip and latent frame) come back exactly; cell borders are smooth, not blocky."""
    shortcut = PixelShortcut(channels=3, latent_channels=16, spatial=8, temporal=8)
    colours = np.random.default_rng(4).uniform(-1, 1, (2, 2, 1, 1, 3)).astype(np.float32)  # (B, T', 1, 1, C)
    clip = np.broadcast_to(colours.repeat(8, axis=1), (2, 16, 24, 32, 3)).copy()  # channels-last pixels
    latents = shortcut.encode(Tensor(clip))
    assert latents.shape == (2, 2, 3, 4, 16)
    np.testing.assert_allclose(shortcut.decode(latents, 8).asnumpy(), clip, atol=1e-6)
    step = np.zeros((1, 1, 16, 16, 3), np.float32)
    step[:, :, :, 8:] = 1.0  # two cells, 0 then 1: the decoded edge ramps instead of jumping
    row = shortcut.decode(shortcut.encode(Tensor(step)), 1).asnumpy()[0, 0, 0, :, 0]
    np.testing.assert_allclose(row[:4], 0.0, atol=1e-6)
    np.testing.assert_allclose(row[12:], 1.0, atol=1e-6)
    assert np.all(np.diff(row) >= 0) and 0 < row[7] < 0.5 < row[8] < 1


def test_temporal_tiling_is_exact_with_the_shortcut(video):
    """Tiles start on latent cells and the shortcut is local to a cell: a frame-wise TAE tiles exactly."""
    model = TemporalAutoencoder(TAEConfig.tiny(pixel_shortcut=True), seed=0)
    x = video((1, 3, 32, 16, 16), seed=5)
    z = model.encode(x).mean
    y = model.decode(z)
    model.enable_tiling(tile_frames=16, overlap_frames=0, tile_size=None)
    np.testing.assert_allclose(model.encode(x).mean.asnumpy(), z.asnumpy(), atol=1e-5)
    np.testing.assert_allclose(model.decode(z).asnumpy(), y.asnumpy(), atol=1e-5)


def test_config_checks_and_round_trip():
    config = TAEConfig.tiny(pixel_shortcut=True)
    assert TAEConfig.from_dict(config.to_dict()) == config
    assert TAEConfig().pixel_shortcut is False  # SD3.5 / Movie Gen have no shortcut
    with pytest.raises(ValueError, match="pixel_shortcut"):
        TAEConfig.tiny(pixel_shortcut=True, out_channels=1)
    with pytest.raises(ValueError, match="pixel_shortcut"):
        TAEConfig.tiny(pixel_shortcut=True, latent_channels=2)
