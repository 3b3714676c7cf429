"""The MindSpore CLIP vision tower (PT2V's reference-image encoder) against PyTorch `transformers` on tiny random
models the tests build: `CLIPVisionModelWithProjection` and a full `CLIPModel` folder."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

from mg_transformer.vision import CLIP_MEAN, CLIP_STD, CLIPVisionConfig, CLIPVisionEncoder, preprocess


def _widen(model, torch) -> None:
    """CLIP's initialisation is tiny (std 0.02): widen it so every layer changes the outputs."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif param.ndim >= 2:
                param.normal_(0.0, float(np.prod(param.shape[1:])) ** -0.5)
            else:
                param.normal_(0.0, 0.2)


@pytest.fixture(scope="module")
def hf_vision(tmp_path_factory, torch):
    from transformers import CLIPVisionConfig as HFConfig
    from transformers import CLIPVisionModelWithProjection

    config = HFConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=7,
        projection_dim=24,
        hidden_act="quick_gelu",
    )
    torch.manual_seed(2)
    model = CLIPVisionModelWithProjection(config).eval()
    _widen(model, torch)
    folder = tmp_path_factory.mktemp("clip_vision")
    model.save_pretrained(folder)
    return folder, model


def test_vision_tower_matches_transformers(hf_vision, torch):
    folder, reference = hf_vision
    ours = CLIPVisionEncoder.from_pretrained(folder)
    assert ours.config.with_projection and ours.config.num_patches == 16
    pixels = np.random.default_rng(0).standard_normal((3, 3, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = reference(pixel_values=torch.tensor(pixels), output_hidden_states=True)
    states, pooled = ours(ms.Tensor(pixels))
    assert states.shape == (3, 17, 32)
    np.testing.assert_allclose(states.asnumpy(), expected.last_hidden_state.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        ours.project(pooled).asnumpy(), expected.image_embeds.numpy(), atol=1e-4, rtol=1e-4
    )
    # the tokens PT2V uses: the post-norm applied to every position (the class token's is `pooled`)
    tokens = ours.tokens(ms.Tensor(pixels)).asnumpy()
    post = reference.vision_model.post_layernorm
    with torch.no_grad():
        np.testing.assert_allclose(tokens, post(expected.last_hidden_state).numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(tokens[:, 0], pooled.asnumpy(), atol=1e-6)


def test_round_trip_through_save_pretrained_loads_in_transformers(hf_vision, torch, tmp_path):
    from transformers import CLIPVisionModelWithProjection

    folder, reference = hf_vision
    CLIPVisionEncoder.from_pretrained(folder).save_pretrained(tmp_path)
    again = CLIPVisionModelWithProjection.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(
            again(pixel_values=pixels).image_embeds.numpy(),
            reference(pixel_values=pixels).image_embeds.numpy(),
            atol=1e-6,
        )


def test_full_clip_model_folder_loads_the_vision_tower(torch, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "max_position_embeddings": 20,
        },
        vision_config={
            "hidden_size": 24,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    torch.manual_seed(3)
    reference = CLIPModel(config).eval()
    _widen(reference, torch)
    reference.save_pretrained(tmp_path)
    ours = CLIPVisionEncoder.from_pretrained(tmp_path)  # the text tower is skipped
    assert ours.config.hidden_size == 24 and ours.config.projection_dim == 12 and ours.config.with_projection
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=pixels)
    expected = getattr(expected, "pooler_output", expected)  # transformers 5 may return an output object
    _, pooled = ours(ms.Tensor(pixels.numpy()))
    np.testing.assert_allclose(ours.project(pooled).asnumpy(), expected.numpy(), atol=1e-4, rtol=1e-4)


def test_wrong_image_size_and_model_type_are_named():
    model = CLIPVisionEncoder(
        CLIPVisionConfig(
            hidden_size=8,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        )
    )
    with pytest.raises(
        ValueError, match=r"expected CLIP-normalised pixels \(B, 3, 16, 16\), got shape \(1, 3, 32, 32\)"
    ):
        model(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    with pytest.raises(ValueError, match="model_type 'clip_text_model' is not a CLIP vision model"):
        CLIPVisionConfig.from_hf({"model_type": "clip_text_model"}, source="x/config.json")


def test_preprocess_crops_resizes_and_normalises():
    # a 4x6 image whose centre 4x4 square has one colour per 2x2 quadrant: shrunk to 2x2 each pixel is a quadrant
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :1] = image[:, 5:] = 255  # outside the centred square: cropped away
    quadrants = [[(10, 20, 30), (40, 50, 60)], [(70, 80, 90), (100, 110, 120)]]
    for i in range(2):
        for j in range(2):
            image[2 * i : 2 * i + 2, 1 + 2 * j : 3 + 2 * j] = quadrants[i][j]
    out = preprocess(image, 2)
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32
    expected = (np.asarray(quadrants, np.float64) / 255 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), expected, atol=1e-6)
    # enlarging a flat image keeps it flat
    flat = np.full((3, 3, 3), 128, np.uint8)
    np.testing.assert_allclose(
        preprocess(flat, 7), preprocess(flat, 3)[:, :, :1, :1].repeat(7, 2).repeat(7, 3), atol=1e-6
    )
