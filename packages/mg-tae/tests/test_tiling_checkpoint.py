"""Tiled encode/decode against untiled results, the tile plan itself, and checkpoints on disk."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mg_tae import TAEConfig, TemporalAutoencoder
from mg_tae.metrics import psnr
from mg_tae.tiling import ramp, windows
from mg_testing import check_save_load_round_trip


def _relative_psnr(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = b.min(), b.max()
    return psnr((a - lo) / (hi - lo) * 2 - 1, (b - lo) / (hi - lo) * 2 - 1)


@pytest.mark.parametrize(
    "length, tile, stride", [(5, 8, 4), (40, 16, 8), (41, 16, 8), (33, 32, 16), (7, 4, 2)]
)
def test_windows_cover_and_ramps_sum_to_one(length, tile, stride):
    spans = windows(length, tile, stride)
    assert spans[0][0] == 0 and spans[-1][1] == length
    total = np.zeros(length)
    for k, (a, b) in enumerate(spans):
        assert b - a <= tile
        left = spans[k - 1][1] - a if k else 0
        right = b - spans[k + 1][0] if k + 1 < len(spans) else 0
        total[a:b] += ramp(b - a, max(left, 0), max(right, 0))
    np.testing.assert_allclose(total[: spans[-1][0]], 1.0, atol=1e-12)  # where at most two tiles meet
    assert np.all(total > 0)


def test_temporal_tiling_is_exact_for_a_framewise_tae(video):
    """At initialisation the TAE is frame-wise, so temporal tiles must reproduce the untiled result exactly:
    this checks the tile plan, latent alignment and blend weights."""
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    x = video((1, 3, 41, 16, 16))
    z = model.encode(x).mean
    y = model.decode(z, num_frames=41)
    model.enable_tiling(tile_frames=16, overlap_frames=8, tile_size=None)
    zt = model.encode(x).mean
    yt = model.decode(z, num_frames=41)
    assert zt.shape == z.shape == (1, 16, 6, 2, 2) and yt.shape == y.shape
    np.testing.assert_allclose(zt.asnumpy(), z.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(yt.asnumpy(), y.asnumpy(), rtol=1e-5, atol=1e-5)


def test_temporal_tiling_with_overlap_stays_close_and_beats_no_overlap(video, perturb_temporal):
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    perturb_temporal(model, scale=0.05)
    z = video((1, 16, 8, 2, 2), seed=4)
    y = model.decode(z).asnumpy()
    model.enable_tiling(tile_frames=32, overlap_frames=16, tile_size=None)
    blended = _relative_psnr(model.decode(z).asnumpy(), y)
    model.enable_tiling(tile_frames=32, overlap_frames=0, tile_size=None)
    cut = _relative_psnr(model.decode(z).asnumpy(), y)
    assert blended > cut + 1.0 and blended > 20.0  # 26.8 vs 25.1 dB when written


def test_spatial_tiling_stays_close(video):
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    x = video((1, 3, 1, 96, 96))
    z = model.encode(x).mean
    y = model.decode(z, num_frames=1).asnumpy()
    model.enable_tiling(tile_size=64, overlap_size=32)
    zt = model.encode(x).mean.asnumpy()
    yt = model.decode(z, num_frames=1).asnumpy()
    assert zt.shape == (1, 16, 1, 12, 12) and yt.shape == y.shape
    # Tiles see their own GroupNorm statistics and context, so spatial tiles are close, not exact (random weights
    # and noise input are a hard case: 0.27 relative latent error and ~29 dB decode PSNR when written).
    assert _relative_psnr(yt, y) > 25.0
    assert np.abs(zt - z.asnumpy()).mean() < 0.4 * np.abs(z.asnumpy()).mean()


def test_tiling_arguments_are_checked():
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    with pytest.raises(ValueError, match="tile_frames must be a positive multiple of 8"):
        model.enable_tiling(tile_frames=12)
    with pytest.raises(ValueError, match="overlap_frames"):
        model.enable_tiling(tile_frames=16, overlap_frames=16)
    with pytest.raises(ValueError, match="tile_size"):
        model.enable_tiling(tile_size=100)


def encoded_mean(model, x):
    return model.encode(x).mean


def test_save_and_load_round_trip(tmp_path, video, perturb_temporal):
    model = TemporalAutoencoder(TAEConfig.tiny(latent_channels=8), seed=3)
    perturb_temporal(model, scale=0.1)
    # parameters by name, config and encoded means all exactly equal after loading
    check_save_load_round_trip(
        model, (video((1, 3, 9, 16, 16)),), folder=tmp_path / "ckpt", forward=encoded_mean
    )
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "model.safetensors"]  # no temporary files left behind
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["latent_channels"] == 8
    stored = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert "encoder.down_blocks.0.resnets.0.conv1.temporal.weight" in stored


def test_strict_loading_fails_loudly_and_non_strict_reports(tmp_path):
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    removed = state.pop("decoder.conv_out.spatial.bias")
    state["encoder.unknown.weight"] = np.zeros(2, np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        ValueError, match=r"missing: decoder\.conv_out\.spatial\.bias.*unexpected: encoder\.unknown"
    ):
        TemporalAutoencoder.from_pretrained(tmp_path)
    with pytest.warns(RuntimeWarning, match="partial load"):
        partial = TemporalAutoencoder.from_pretrained(tmp_path, strict=False)
    assert partial.state_dict()["decoder.conv_out.spatial.bias"].shape == removed.shape


def test_unreadable_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        TemporalAutoencoder.from_pretrained(tmp_path)
    TAEConfig.tiny().save(tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        TemporalAutoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{bad json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        TemporalAutoencoder.from_pretrained(tmp_path)
