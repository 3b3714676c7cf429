"""Inflation from diffusers' AutoencoderKL: the real SD3.5 key set maps completely, and an inflated TAE matches
diffusers' PyTorch encode/decode on single frames (random weights, SD3.5 structure at reduced width)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from mindspore import Tensor  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from mg_tae import TAEConfig, TemporalAutoencoder  # noqa: E402
from mg_tae.cli import main as cli_main  # noqa: E402
from mg_tae.inflate import SD35_VAE_DIFFUSERS_CONFIG, inflate_state_dict  # noqa: E402

SD35_VAE = SD35_VAE_DIFFUSERS_CONFIG


def test_sd35_key_set_maps_completely():
    with torch.device("meta"):
        vae = diffusers.AutoencoderKL(**SD35_VAE)
    source = {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in vae.state_dict().items()}
    tae = TemporalAutoencoder(TAEConfig(), seed=0)
    shapes = {n: tuple(p.shape) for n, p in tae.parameters_and_names()}
    state, report = inflate_state_dict(source, shapes)
    assert len(source) == 244
    assert report.unused_source == [] and report.missing == []
    assert len(report.mapped) == 244
    # Everything not mapped is a temporal layer, and every temporal layer is left at its init.
    assert set(shapes) == set(state) | set(report.temporal_initialised)
    assert report.mapped["encoder.down_blocks.1.resnets.0.conv1.weight"] == (
        "encoder.down_blocks.1.resnets.0.conv1.spatial.weight"
    )
    assert (
        report.mapped["decoder.up_blocks.0.upsamplers.0.conv.weight"]
        == "decoder.up_blocks.0.upsamplers.0.conv.weight"
    )


def _reduced_sd35(widths=(32, 64, 64, 64)):
    reduced = dict(SD35_VAE, block_out_channels=list(widths))
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**reduced).eval()
    with torch.no_grad():  # random, non-trivial norms so the comparison exercises every affine
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    config = TAEConfig(block_out_channels=tuple(widths))
    return vae, config


@pytest.mark.parametrize(
    "widths",
    [(32, 64, 64, 64), pytest.param((128, 256, 512, 512), marks=pytest.mark.slow, id="sd35-full-width")],
)
def test_inflated_tae_matches_diffusers_on_single_frames(tmp_path, widths):
    vae, config = _reduced_sd35(widths)
    src = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.detach().numpy().copy() for k, v in vae.state_dict().items()}, str(src))
    (tmp_path / "tae.json").write_text(json.dumps(config.to_dict()))
    out = tmp_path / "tae"
    assert (
        cli_main(["inflate", "--src", str(src), "--out", str(out), "--config", str(tmp_path / "tae.json")])
        == 0
    )
    tae = TemporalAutoencoder.from_pretrained(out)

    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 48)).astype(np.float32)
    with torch.no_grad():
        dist = vae.encode(torch.from_numpy(x)).latent_dist
        ref_mean, ref_logvar = dist.mean.numpy(), dist.logvar.numpy()
        ref_pixels = vae.decode(dist.mean).sample.numpy()

    post = tae.encode(Tensor(x[:, :, None]))
    assert post.mean.shape == (2, 16, 1, 4, 6)
    scale = np.abs(ref_mean).max()
    np.testing.assert_allclose(post.mean.asnumpy()[:, :, 0], ref_mean, atol=1e-4 * max(scale, 1.0))
    np.testing.assert_allclose(
        post.logvar.asnumpy()[:, :, 0], ref_logvar, atol=1e-4 * max(np.abs(ref_logvar).max(), 1.0)
    )

    pixels = tae.decode(Tensor(ref_mean[:, :, None]), num_frames=1).asnumpy()
    assert pixels.shape == (2, 3, 1, 32, 48)
    np.testing.assert_allclose(pixels[:, :, 0], ref_pixels, atol=1e-4 * max(np.abs(ref_pixels).max(), 1.0))
    # The image latent decodes to 8 identical frames at inflation (temporal layers are identities).
    eight = tae.decode(Tensor(ref_mean[:, :, None])).asnumpy()
    np.testing.assert_allclose(eight, np.repeat(pixels, 8, axis=2), atol=1e-5)


def test_inflate_cli_reports_foreign_keys(tmp_path, capsys):
    vae, config = _reduced_sd35()
    state = {k: v.detach().numpy().copy() for k, v in vae.state_dict().items()}
    state["encoder.extra_layer.weight"] = np.zeros((3,), np.float32)
    del state["decoder.conv_out.bias"]
    src = tmp_path / "vae.safetensors"
    save_file(state, str(src))
    (tmp_path / "tae.json").write_text(json.dumps(config.to_dict()))
    args = [
        "inflate",
        "--src",
        str(src),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(tmp_path / "tae.json"),
    ]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "encoder.extra_layer.weight" in err and "decoder.conv_out.spatial.bias" in err
    assert not (tmp_path / "o").exists()


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["inflate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--src", "--out", "--config", "--non-strict"):
        assert option in text
