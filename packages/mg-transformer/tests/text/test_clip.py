"""The MindSpore CLIP text encoder against PyTorch `transformers` (MetaCLIP-style, more than 77 positions)."""

from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest

from mg_transformer.text import CLIPTextConfig, CLIPTextEncoder, TextEncoder


def test_clip_matches_transformers_with_padding_and_long_positions(hf_clip, torch):
    folder, reference = hf_clip
    ours = CLIPTextEncoder.from_pretrained(folder)
    assert ours.config.max_position_embeddings == 300 and ours.config.with_projection
    rng = np.random.default_rng(0)
    lengths, total = [250, 100, 3], 250
    ids = rng.integers(2, reference.config.vocab_size, size=(3, total)).astype(np.int32)
    mask = (np.arange(total)[None] < np.array(lengths)[:, None]).astype(np.int32)
    eos = reference.config.eos_token_id
    ids[ids == eos] = 2
    for row, n in enumerate(lengths):
        ids[row, n - 1] = eos  # the tokenizer ends every prompt with EOS; HF pools at the first EOS
        ids[row, n:] = eos  # and pads with it
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    states, pooled = ours(ms.Tensor(ids), ms.Tensor(mask))
    real = mask[:, :, None].astype(bool)
    np.testing.assert_allclose(
        states.asnumpy() * real, expected.last_hidden_state.numpy() * real, atol=1e-4, rtol=1e-4
    )
    np.testing.assert_allclose(
        ours.project(pooled).asnumpy(), expected.text_embeds.numpy(), atol=1e-4, rtol=1e-4
    )
    # pooled = the state at the last real token
    np.testing.assert_allclose(pooled.asnumpy()[2], states.asnumpy()[2, 2], atol=1e-6)


def test_clip_is_causal(hf_clip):
    folder, _ = hf_clip
    model = CLIPTextEncoder.from_pretrained(folder)
    ids = np.arange(5, 25, dtype=np.int32)[None]
    changed = ids.copy()
    changed[0, 12] += 1
    a, _ = model(ms.Tensor(ids))
    b, _ = model(ms.Tensor(changed))
    diff = np.abs(a.asnumpy() - b.asnumpy()).max(-1)[0]
    assert diff[:12].max() < 1e-6 and diff[12:].min() > 1e-3


def test_full_clip_model_folder_loads_the_text_tower(torch, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 120,
            "hidden_act": "gelu",
            "eos_token_id": 98,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 20,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 8,
            "patch_size": 4,
        },
        projection_dim=12,
    )
    torch.manual_seed(3)
    reference = CLIPModel(config).eval()
    reference.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "clip"
    ours = CLIPTextEncoder.from_pretrained(tmp_path)
    assert ours.config.projection_dim == 12 and ours.config.hidden_act == "gelu"
    ids = np.array([[5, 17, 33, 98, 98], [7, 8, 98, 98, 98]], dtype=np.int32)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=np.int32)
    with torch.no_grad():
        expected = reference.get_text_features(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)
        )
    expected = getattr(expected, "pooler_output", expected)
    _, pooled = ours(ms.Tensor(ids), ms.Tensor(mask))
    np.testing.assert_allclose(ours.project(pooled).asnumpy(), expected.numpy(), atol=1e-4, rtol=1e-4)


def test_save_pretrained_is_read_by_transformers(torch, tmp_path):
    from transformers import CLIPTextModel

    encoder = TextEncoder.preset("metaclip", "tiny", seed=2)
    encoder.save_pretrained(tmp_path)
    reference = CLIPTextModel.from_pretrained(tmp_path).eval()
    ids = np.array([[40, 41, 42, 43, 1, 0, 0]], dtype=np.int32)
    mask = (ids > 0).astype(np.int32)
    mask[0, 4] = 1
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    states, pooled = encoder.model(ms.Tensor(ids), ms.Tensor(mask))
    np.testing.assert_allclose(states.asnumpy()[:, :5], expected.last_hidden_state.numpy()[:, :5], atol=1e-4)
    np.testing.assert_allclose(pooled.asnumpy(), expected.pooler_output.numpy(), atol=1e-4)


def test_config_errors():
    with pytest.raises(ValueError, match="not a CLIP text model"):
        CLIPTextConfig.from_hf({"model_type": "t5"}, source="m/config.json")
    with pytest.raises(ValueError, match="text_config"):
        CLIPTextConfig.from_hf({"model_type": "clip"})
    with pytest.raises(ValueError, match=r"m/config\.json.*activation"):
        CLIPTextConfig.from_hf(
            {"model_type": "clip_text_model", "hidden_act": "swiglu"}, source="m/config.json"
        )


def test_sequence_longer_than_position_table_is_rejected():
    model = CLIPTextEncoder(
        CLIPTextConfig(
            vocab_size=10,
            hidden_size=8,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=6,
        )
    )
    with pytest.raises(ValueError, match="max_position_embeddings 6"):
        model(ms.Tensor(np.zeros((1, 7), np.int32)))


def test_metaclip2_folder_loads(torch, tmp_path):
    from transformers import MetaClip2TextConfig, MetaClip2TextModelWithProjection

    config = MetaClip2TextConfig(
        vocab_size=120,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        projection_dim=16,
        eos_token_id=119,
    )
    torch.manual_seed(4)
    reference = MetaClip2TextModelWithProjection(config).eval()
    reference.save_pretrained(tmp_path)
    ours = CLIPTextEncoder.from_pretrained(tmp_path)
    ids = np.array([[4, 50, 60, 119, 0], [8, 9, 10, 11, 119]], dtype=np.int32)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=np.int32)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask))
    states, pooled = ours(ms.Tensor(ids), ms.Tensor(mask))
    np.testing.assert_allclose(states.asnumpy()[0, :4], expected.last_hidden_state.numpy()[0, :4], atol=1e-4)
    np.testing.assert_allclose(ours.project(pooled).asnumpy(), expected.text_embeds.numpy(), atol=1e-4)
