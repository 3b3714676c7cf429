"""Tokenisation against Hugging Face's tokenizers (ids, truncation that keeps special tokens, reported overflow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mg_transformer.text import ByteTokenizer, HFTokenizer, load_tokenizer, word_level_tokenizer
from mg_transformer.text.tokenization import pad_batch


def hf_ids(tokenizer, prompts, max_length):
    out = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="np"
    )
    return out["input_ids"], out["attention_mask"]


def ours_ids(tokenizer, prompts, max_length):
    return pad_batch(tokenizer.encode(prompts, max_length), max_length, tokenizer.pad_id)


@pytest.mark.parametrize("max_length", [8, 40])
def test_byte_tokenizer_matches_byt5_tokenizer(torch, prompts, max_length):
    from transformers import ByT5Tokenizer

    ids, mask = ours_ids(ByteTokenizer(), prompts, max_length)
    expected_ids, expected_mask = hf_ids(ByT5Tokenizer(), prompts, max_length)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


def test_byte_tokenizer_reports_what_it_cut():
    (item,) = ByteTokenizer().encode(["héllo world"], max_length=5)
    # 4 bytes of text fit next to the EOS: "h", the two bytes of "é", "l"
    assert item.ids == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3, ord("l") + 3, 1]
    assert item.dropped == len("héllo world".encode()) - 4
    assert item.dropped_text == "lo world"


@pytest.mark.parametrize("fixture", ["unigram_tokenizer_dir", "bpe_tokenizer_dir"])
@pytest.mark.parametrize("max_length", [6, 64])
def test_tokenizer_json_matches_transformers(request, prompts, fixture, max_length):
    AutoTokenizer = pytest.importorskip("transformers").AutoTokenizer

    folder = request.getfixturevalue(fixture)
    ours = load_tokenizer(folder)
    assert isinstance(ours, HFTokenizer)
    reference = AutoTokenizer.from_pretrained(folder)
    assert ours.pad_id == reference.pad_token_id
    ids, mask = ours_ids(ours, prompts, max_length)
    expected_ids, expected_mask = hf_ids(reference, prompts, max_length)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


def test_tokenizer_json_overflow_is_counted_and_located(unigram_tokenizer_dir):
    tokenizer = load_tokenizer(unigram_tokenizer_dir)
    prompt = "a red circle moving left on a blue background"
    full = tokenizer.tokenizer.encode(prompt, add_special_tokens=False)
    (item,) = tokenizer.encode([prompt], max_length=5)
    assert item.dropped == len(full.ids) - 4  # four text tokens plus </s>
    assert item.ids[-1] == tokenizer.tokenizer.token_to_id("</s>")
    assert item.ids[:4] == full.ids[:4]
    start = full.offsets[4][0]
    assert item.dropped_text == prompt[start:] and prompt.endswith(item.dropped_text)
    (fits,) = tokenizer.encode([prompt], max_length=len(full.ids) + 1)
    assert fits.dropped == 0 and fits.dropped_text == ""


def test_load_tokenizer_recognises_byt5_folders_and_explains_missing_files(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer"}))
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)
    # or the model's config.json names it, or nothing but ByT5's vocabulary size says it
    bare = tmp_path / "bare"
    bare.mkdir()
    assert isinstance(load_tokenizer(bare, model_config={"tokenizer_class": "ByT5Tokenizer"}), ByteTokenizer)
    assert isinstance(load_tokenizer(bare, model_config={"vocab_size": 384}), ByteTokenizer)
    with pytest.raises(FileNotFoundError, match="tokenizer_class None"):
        load_tokenizer(bare, model_config={"vocab_size": 32128})
    other = tmp_path / "spm"
    other.mkdir()
    (other / "spiece.model").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json.*spiece\.model"):
        load_tokenizer(other)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken/tokenizer\.json"):
        load_tokenizer(broken)


def test_max_length_must_leave_room_for_text(bpe_tokenizer_dir):
    with pytest.raises(ValueError, match="no room"):
        load_tokenizer(bpe_tokenizer_dir).encode(["a"], max_length=2)
    with pytest.raises(ValueError, match="no room"):
        ByteTokenizer().encode(["a"], max_length=1)


def test_word_level_tokenizer_ids_follow_its_sorted_vocabulary(tmp_path):
    texts = ["a red circle moving left", "A blue square, moving up"]
    tokenizer = word_level_tokenizer(texts)
    # Built by hand: specials first, then the lower-cased words and punctuation in sorted order.
    vocab = [
        "<pad>",
        "</s>",
        "<unk>",
        *sorted({"a", "red", "circle", "moving", "left", "blue", "square", ",", "up"}),
    ]
    assert tokenizer.vocab_size == len(vocab)
    (item, unknown) = tokenizer.encode(["A RED circle moving up", "a green circle"], max_length=8)
    assert item.ids == [vocab.index(w) for w in ("a", "red", "circle", "moving", "up")] + [1]
    assert unknown.ids == [vocab.index("a"), 2, vocab.index("circle"), 1]
    (cut,) = tokenizer.encode(["a red circle moving left"], max_length=3)
    assert cut.ids == [vocab.index("a"), vocab.index("red"), 1]
    assert (cut.dropped, cut.dropped_text) == (3, "circle moving left")

    tokenizer.save(tmp_path, max_length=8)
    reloaded = load_tokenizer(tmp_path)
    assert reloaded.pad_id == 0
    assert [t.ids for t in reloaded.encode(texts, 8)] == [t.ids for t in tokenizer.encode(texts, 8)]


def test_word_level_tokenizer_matches_transformers_after_saving(torch, tmp_path):
    from transformers import AutoTokenizer

    texts = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
    word_level_tokenizer(texts).save(tmp_path, max_length=8)
    reference = AutoTokenizer.from_pretrained(tmp_path)
    prompts = ["a red square moving down", "a purple circle moving left"]
    ids, mask = ours_ids(load_tokenizer(tmp_path), prompts, 8)
    expected_ids, expected_mask = hf_ids(reference, prompts, 8)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)
