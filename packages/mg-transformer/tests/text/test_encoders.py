"""`TextEncoder` end to end on Hugging Face folders: HF tokenizer + HF model give the same masked embeddings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mg_transformer.text import TextEncoder, word_level_tokenizer


def hf_masked_states(folder, model, torch, prompts, max_length):
    """Reference: HF tokenizer (pad to max_length, truncate) + HF model, states zeroed at padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].numpy()
    return states.numpy() * mask[:, :, None], mask, batch["input_ids"].numpy()


@pytest.fixture(scope="module")
def ul2_folder(hf_t5, unigram_tokenizer_dir):
    return hf_t5("gated-silu", vocab_size=150, tokenizer_dir=unigram_tokenizer_dir)


@pytest.fixture(scope="module")
def byt5_folder(hf_t5, torch, tmp_path_factory):
    from transformers import ByT5Tokenizer

    folder = tmp_path_factory.mktemp("byt5_tok")
    ByT5Tokenizer().save_pretrained(folder)
    return hf_t5("gated-gelu", vocab_size=384, tokenizer_dir=folder)


@pytest.mark.parametrize("encoder", ["ul2", "byt5", "metaclip"])
def test_text_encoder_matches_transformers_pipeline(request, torch, prompts, encoder):
    folder, model = request.getfixturevalue(
        {"ul2": "ul2_folder", "byt5": "byt5_folder", "metaclip": "hf_clip"}[encoder]
    )
    max_length = {"ul2": 12, "byt5": 30, "metaclip": 12}[encoder]  # short enough that some prompts truncate
    ours = TextEncoder.from_pretrained(encoder, folder, max_length=max_length)
    out = ours.encode(prompts)
    expected, mask, ids = hf_masked_states(folder, model, torch, prompts, max_length)
    assert out.emb.shape == (len(prompts), max_length, 32) and out.emb.dtype == np.float32
    np.testing.assert_array_equal(out.mask, mask)
    np.testing.assert_array_equal(out.tokens, ids)
    np.testing.assert_allclose(out.emb, expected, atol=1e-4, rtol=1e-4)
    assert any(out.dropped) and not all(out.dropped)


def test_default_max_lengths(byt5_folder, hf_clip, ul2_folder):
    assert TextEncoder.from_pretrained("byt5", byt5_folder[0]).max_length == 100
    assert TextEncoder.from_pretrained("ul2", ul2_folder[0]).max_length == 512
    assert TextEncoder.from_pretrained("metaclip", hf_clip[0]).max_length == 256  # the checkpoint allows 300
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings 300"):
        TextEncoder.from_pretrained("metaclip", hf_clip[0], max_length=301)


def test_long_prompt_metaclip_beyond_77_tokens(hf_clip, torch):
    folder, model = hf_clip
    prompt = " ".join(["a red circle moving left on a blue background"] * 30)
    ours = TextEncoder.from_pretrained("metaclip", folder, max_length=200)
    out = ours.encode([prompt, "a cat"])
    assert out.lengths[0] == 200 and out.dropped[0] > 0
    expected, _, _ = hf_masked_states(folder, model, torch, [prompt, "a cat"], 200)
    np.testing.assert_allclose(out.emb, expected, atol=1e-4, rtol=1e-4)


def test_encoder_kind_must_fit_the_name(byt5_folder, hf_clip):
    with pytest.raises(ValueError, match="not a CLIP text model"):
        TextEncoder.from_pretrained("metaclip", byt5_folder[0])
    with pytest.raises(ValueError, match="not a T5 model"):
        TextEncoder.from_pretrained("ul2", hf_clip[0])
    with pytest.raises(ValueError, match="unknown text encoder 't5'"):
        TextEncoder.from_pretrained("t5", byt5_folder[0])


def test_encode_warns_nothing_itself(byt5_folder):
    ours = TextEncoder.from_pretrained("byt5", byt5_folder[0], max_length=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ours.encode(["abcdef"])  # the embedder, not the encoder, reports truncation
    assert out.dropped == [3] and out.dropped_text == ["def"]


@pytest.mark.parametrize("name", ["ul2", "metaclip"])
def test_preset_with_word_tokenizer_saves_and_reloads_the_same_encoder(tmp_path, name):
    captions = ["a red circle moving left", "a blue square moving up"]
    encoder = TextEncoder.preset(name, "tiny", seed=3, max_length=8, tokenizer=word_level_tokenizer(captions))
    byte_encoder = TextEncoder.preset(name, "tiny", seed=3, max_length=8)
    out = encoder.encode(captions)
    # One token per word plus the EOS; the byte preset sees one per byte (cut at 8 here).
    np.testing.assert_array_equal(out.mask.sum(1), [6, 6])
    np.testing.assert_array_equal(byte_encoder.encode(captions).mask.sum(1), [8, 8])
    encoder.save_pretrained(tmp_path / name)
    reloaded = TextEncoder.from_pretrained(name, tmp_path / name, max_length=8)
    again = reloaded.encode(captions)
    np.testing.assert_array_equal(again.mask, out.mask)
    np.testing.assert_allclose(again.emb, out.emb, rtol=1e-5, atol=1e-6)


def test_preset_refuses_a_tokenizer_larger_than_its_vocabulary():
    words = [f"w{i}" for i in range(400)]
    with pytest.raises(ValueError, match="384 token embeddings; the tokenizer needs 403"):
        TextEncoder.preset("ul2", "tiny", tokenizer=word_level_tokenizer([" ".join(words)]))
