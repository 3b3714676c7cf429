"""The MindSpore T5 encoder against PyTorch `transformers` on the same random checkpoints (UL2 / ByT5 variants)."""

from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest

from mg_transformer.text import T5Encoder, T5EncoderConfig, TextEncoder
from mg_transformer.text.t5 import relative_position_buckets


def hf_states(model, torch, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask.astype(np.int64))
        )
    return out.last_hidden_state.numpy()


def random_batch(vocab: int, lengths: list[int], total: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(len(lengths), total)).astype(np.int32)
    mask = (np.arange(total)[None] < np.array(lengths)[:, None]).astype(np.int32)
    return np.where(mask == 1, ids, 0).astype(np.int32), mask


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (32, 64), (64, 256), (16, 100)])
def test_relative_position_buckets_match_transformers(torch, num_buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    n = 700
    relative = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    expected = T5Attention._relative_position_bucket(relative, True, num_buckets, max_distance).numpy()
    np.testing.assert_array_equal(relative_position_buckets(n, num_buckets, max_distance), expected)


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu", "gated-silu"])
def test_t5_encoder_matches_transformers(hf_t5, torch, feed_forward_proj):
    folder, reference = hf_t5(feed_forward_proj)
    ours = T5Encoder.from_pretrained(folder)
    # lengths beyond max_distance 64 cover the logarithmic buckets; padding in three rows
    ids, mask = random_batch(150, [140, 90, 17, 1], 140)
    expected = hf_states(reference, torch, ids, mask)
    got = ours(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    assert got.shape == (4, 140, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_outputs_at_real_tokens_do_not_depend_on_padding(hf_t5):
    folder, _ = hf_t5("gated-gelu")
    model = T5Encoder.from_pretrained(folder)
    ids, mask = random_batch(150, [20], 20, seed=3)
    short = model(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    padded_ids = np.concatenate([ids, np.zeros((1, 44), np.int32)], 1)
    padded_mask = np.concatenate([mask, np.zeros((1, 44), np.int32)], 1)
    long = model(ms.Tensor(padded_ids), ms.Tensor(padded_mask)).asnumpy()
    np.testing.assert_allclose(long[:, :20], short, atol=1e-5)
    unmasked = model(ms.Tensor(padded_ids), ms.Tensor(np.ones_like(padded_mask))).asnumpy()
    assert np.abs(unmasked[:, :20] - short).max() > 1e-3  # the mask is what makes it so


def test_full_seq2seq_checkpoint_loads_its_encoder(hf_t5, torch):
    folder, reference_encoder = hf_t5("gated-silu", full=True)
    keys = json.loads((folder / "config.json").read_text())
    assert keys["architectures"] == ["T5ForConditionalGeneration"]
    ours = T5Encoder.from_pretrained(folder)
    ids, mask = random_batch(150, [30, 12], 30, seed=1)
    np.testing.assert_allclose(
        ours(ms.Tensor(ids), ms.Tensor(mask)).asnumpy(),
        hf_states(reference_encoder, torch, ids, mask),
        atol=1e-4,
    )


def test_sharded_safetensors_index(hf_t5, torch):
    folder, reference = hf_t5("relu", max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2, "the checkpoint should really be sharded"
    assert not (folder / "model.safetensors").exists()
    ours = T5Encoder.from_pretrained(folder)
    ids, mask = random_batch(150, [25, 40], 40, seed=2)
    np.testing.assert_allclose(
        ours(ms.Tensor(ids), ms.Tensor(mask)).asnumpy(), hf_states(reference, torch, ids, mask), atol=1e-4
    )


def test_bfloat16_checkpoint(hf_t5, torch, tmp_path):
    _, reference = hf_t5("gated-gelu")
    import copy

    bf16 = copy.deepcopy(reference).to(torch.bfloat16)
    bf16.save_pretrained(tmp_path)
    widened = bf16.float().eval()  # the same rounded weights in float32
    ours = T5Encoder.from_pretrained(tmp_path)
    assert ours.embed_tokens.weight.dtype == ms.float32
    ids, mask = random_batch(150, [33, 20], 33, seed=4)
    np.testing.assert_allclose(
        ours(ms.Tensor(ids), ms.Tensor(mask)).asnumpy(), hf_states(widened, torch, ids, mask), atol=1e-4
    )


def test_save_pretrained_is_read_by_transformers(torch, tmp_path):
    from transformers import T5EncoderModel

    encoder = TextEncoder.preset("ul2", "tiny", seed=5)
    encoder.save_pretrained(tmp_path)
    reference = T5EncoderModel.from_pretrained(tmp_path).eval()
    ids, mask = random_batch(384, [50, 9], 50, seed=5)
    got = encoder.model(ms.Tensor(ids), ms.Tensor(mask)).asnumpy()
    np.testing.assert_allclose(got, hf_states(reference, torch, ids, mask), atol=1e-4)
    again = TextEncoder.from_pretrained("ul2", tmp_path, max_length=64)
    np.testing.assert_array_equal(again.encode(["a red ball"]).emb, encoder.encode(["a red ball"]).emb)


def test_umt5_and_bad_feed_forward_are_rejected():
    with pytest.raises(ValueError, match="umt5"):
        T5EncoderConfig.from_hf({"model_type": "umt5"}, source="x/config.json")
    with pytest.raises(ValueError, match=r"x/config\.json.*feed_forward_proj"):
        T5EncoderConfig.from_hf(
            {"model_type": "t5", "feed_forward_proj": "gelu-gated"}, source="x/config.json"
        )
    with pytest.raises(ValueError, match="not a T5 model"):
        T5EncoderConfig.from_hf({"model_type": "bert"})
