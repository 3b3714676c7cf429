"""The pixel shortcut (TAEConfig.pixel_shortcut): what it adds to the latent means and to the decoded pixels,
computed independently with numpy block means and a textbook bilinear resize; its exact round trip on flat
clips; tiled == untiled; and configuration checks. (jit == PyNative with the shortcut: test_model.py.)"""

import numpy as np
import pytest
from mindspore import Tensor

from mg_tae import TAEConfig, TemporalAutoencoder
from mg_tae.shortcut import PixelShortcut


def _pair(parts=None, **overrides):
    """The same TAE (same seed, so the same weights) without and with the shortcut (`parts` time parts)."""
    plain = TemporalAutoencoder(TAEConfig.tiny(**overrides), seed=0)
    short = TemporalAutoencoder(
        TAEConfig.tiny(**overrides, pixel_shortcut=True, pixel_shortcut_time_parts=parts), seed=0
    )
    return plain, short


def _part_means(x: np.ndarray, parts: int) -> np.ndarray:
    """(B, C, T, H, W) -> (B, C, T', P, h, w): means over 8x8 pixels and 8/P frames; a clip is padded with its
    last frame to whole latent frames of 8; an image is one latent frame whose every part is the image."""
    b, c, t, h, w = x.shape
    if t == 1:
        return np.repeat(_block_means(x, 1, 8)[:, :, :, None], parts, axis=3)
    cells = -(-t // 8)
    padded = np.stack([x[:, :, min(i, t - 1)] for i in range(cells * 8)], axis=2)
    means = _block_means(padded, 8 // parts, 8)  # (B, C, T' P, h, w), time parts in order
    return means.reshape(b, c, cells, parts, h // 8, w // 8)


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


@pytest.mark.parametrize("parts", [1, 4])
@pytest.mark.parametrize("frames", [1, 16, 12])
def test_encoder_adds_block_means_to_the_latent_means_only(frames, parts, video):
    plain, short = _pair(parts)
    x = video((2, 3, frames, 16, 24))
    added = short.encode_moments(x).asnumpy() - plain.encode_moments(x).asnumpy()
    means = _part_means(x.asnumpy(), parts)  # (2, 3, T', P, 2, 3)
    # latent channel k carries pixel channel k mod 3 of time part (k div 3) mod P
    carried = np.stack([means[:, k % 3, :, (k // 3) % parts] for k in range(16)], axis=1)
    np.testing.assert_allclose(added[:, :16], carried, atol=2e-6)
    np.testing.assert_array_equal(added[:, 16:], 0.0)  # logvar untouched


def _bilinear_x8(a: np.ndarray, axis: int, factor: int = 8) -> np.ndarray:
    """Resize one axis x`factor` the textbook way: sample at (u + 0.5) / f - 0.5, clamped, between the two
    nearest."""
    n = a.shape[axis]
    src = np.clip((np.arange(factor * n) + 0.5) / factor - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - frac) + np.take(a, hi, axis) * frac


@pytest.mark.parametrize("parts", [1, 4])
@pytest.mark.parametrize("latent_frames, size", [(1, (2, 3)), (2, (3, 1))])
def test_decoder_adds_the_mean_of_each_colours_latent_channels_bilinear_in_space_linear_in_time(
    latent_frames, size, parts, video
):
    plain, short = _pair(parts)
    z = video((1, 16, latent_frames, *size), seed=3)
    added = short.decode(z).asnumpy() - plain.decode(z).asnumpy()
    zn = z.asnumpy()
    # part p of colour c: the mean of the latent channels k with k mod 3 == c and (k div 3) mod P == p
    colour = np.zeros((1, 3, latent_frames, parts, *size))
    for c in range(3):
        for p in range(parts):
            carriers = [k for k in range(16) if k % 3 == c and (k // 3) % parts == p]
            colour[:, c, :, p] = zn[:, carriers].mean(axis=1)
    colour = colour.reshape(1, 3, latent_frames * parts, *size)  # time parts in order
    spatial = _bilinear_x8(_bilinear_x8(colour, 3), 4)
    # one part: repeated over the 8 frames; P parts: linear in time between their centres, across latent frames
    # (a single latent frame too, although its convolutional part is decoded once and repeated)
    expected = spatial.repeat(8, axis=2) if parts == 1 else _bilinear_x8(spatial, 2, factor=8 // parts)
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


@pytest.mark.parametrize("parts", [1, 4])
def test_temporal_tiling_with_the_shortcut(video, parts):
    """Tiles start on latent cells: encoding tiles exactly. Decoding too with one part (local to a cell); with
    four, the temporal interpolation reaches one frame into the neighbouring latent frame, so only the two frames
    at a tile border differ from the untiled decode (the default tiling's overlaps blend them)."""
    model = TemporalAutoencoder(TAEConfig.tiny(pixel_shortcut=True, pixel_shortcut_time_parts=parts), seed=0)
    x = video((1, 3, 32, 16, 16), seed=5)
    z = model.encode(x).mean
    y = model.decode(z).asnumpy()
    model.enable_tiling(tile_frames=16, overlap_frames=0, tile_size=None)
    np.testing.assert_allclose(model.encode(x).mean.asnumpy(), z.asnumpy(), atol=1e-5)
    tiled = model.decode(z).asnumpy()
    inside = [t for t in range(32) if parts == 1 or t not in (15, 16)]
    np.testing.assert_allclose(tiled[:, :, inside], y[:, :, inside], atol=1e-5)
    if parts > 1:
        assert np.abs(tiled[:, :, [15, 16]] - y[:, :, [15, 16]]).max() > 1e-3


def test_config_checks_and_round_trip():
    config = TAEConfig.tiny(pixel_shortcut=True)
    assert TAEConfig.from_dict(config.to_dict()) == config
    assert config.shortcut_time_parts == 4  # 16 latent channels hold 4 parts of RGB
    assert TAEConfig.tiny(pixel_shortcut=True, latent_channels=8).shortcut_time_parts == 2
    old = {k: v for k, v in config.to_dict().items() if k != "pixel_shortcut_time_parts"}
    assert TAEConfig.from_dict(old).shortcut_time_parts == 1  # saved by mg-tae <= 0.3: the one-part shortcut
    with pytest.raises(ValueError, match="pixel_shortcut_time_parts"):
        TAEConfig.tiny(pixel_shortcut=True, pixel_shortcut_time_parts=3)
    with pytest.raises(ValueError, match="pixel_shortcut_time_parts"):
        TAEConfig.tiny(pixel_shortcut=True, pixel_shortcut_time_parts=8)  # 8 x 3 > 16 latent channels
    assert TAEConfig().pixel_shortcut is False  # SD3.5 / Movie Gen have no shortcut
    with pytest.raises(ValueError, match="pixel_shortcut"):
        TAEConfig.tiny(pixel_shortcut=True, out_channels=1)
    with pytest.raises(ValueError, match="pixel_shortcut"):
        TAEConfig.tiny(pixel_shortcut=True, latent_channels=2)


def _moving_square(frames: int = 16, size: int = 64, side: int = 16, speed: float = 2.0) -> np.ndarray:
    """(1, T, H, W, 3) channels-last: a white square moving right by `speed` pixels a frame on black."""
    clip = np.full((1, frames, size, size, 3), -1.0, np.float32)
    for t in range(frames):
        left = round(4 + speed * t)
        clip[0, t, 24 : 24 + side, left : left + side] = 1.0
    return clip


def test_with_time_parts_the_shortcut_moves_inside_a_latent_frame():
    """One part: the decoded square stands still for 8 frames, then jumps (static-then-jump, largest step ~all
    of the path); four parts: it moves every frame and the largest step is a small share of the path."""
    from mg_tae.metrics import largest_step_share

    clip = _moving_square()
    channels_first = lambda a: a.transpose(0, 4, 1, 2, 3)  # noqa: E731
    truth = largest_step_share(channels_first(clip))[0]
    shares = {}
    for parts in (1, 4):
        shortcut = PixelShortcut(channels=3, latent_channels=16, spatial=8, temporal=8, time_parts=parts)
        decoded = shortcut.decode(shortcut.encode(Tensor(clip)), 8).asnumpy()
        shares[parts] = largest_step_share(channels_first(decoded))[0]
    assert truth < 0.1  # uniform motion over 15 steps
    assert shares[1] > 0.9
    assert shares[4] < 0.2
