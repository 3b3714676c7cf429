"""`TextEmbedder`: the tiny preset (deterministic, keeps prompts apart), padding, truncation warnings, options."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from mg_transformer.text import ENCODER_NAMES, TextEmbedder, TextEncoder, TextTruncationWarning, quoted_text

# Captions like the quickstart's: they differ only in a colour, shape or direction word.
CAPTIONS = [
    "a red circle moving left",
    "a blue circle moving left",
    "a red square moving left",
    "a red circle moving right",
    "a green triangle moving up",
]


@pytest.fixture(scope="module")
def tiny():
    return TextEmbedder.tiny(seed=0)


@pytest.fixture(scope="module")
def tiny_out(tiny):
    return tiny.embed(CAPTIONS)


def test_tiny_shapes_dims_and_masks(tiny, tiny_out):
    assert tiny.names == ENCODER_NAMES
    assert tiny.dims == {"ul2": 64, "byt5": 48, "metaclip": 32}
    assert tiny.max_lengths == {"ul2": 64, "byt5": 64, "metaclip": 64}
    for name, (emb, mask) in tiny_out.items():
        assert emb.shape == (len(CAPTIONS), 64, tiny.dims[name]) and emb.dtype == np.float32
        assert mask.shape == (len(CAPTIONS), 64) and mask.dtype == np.uint8
        # byte tokens: one per UTF-8 byte plus EOS
        np.testing.assert_array_equal(mask.sum(1), [len(c.encode()) + 1 for c in CAPTIONS])
        assert np.all(emb[mask == 0] == 0)
        assert np.all(np.abs(emb[mask == 1]).sum(-1) > 0)


def test_tiny_keeps_captions_that_differ_by_one_word_apart(tiny_out):
    for name, (emb, mask) in tiny_out.items():
        for i, j in itertools.combinations(range(len(CAPTIONS)), 2):
            relative = np.linalg.norm(emb[i] - emb[j]) / np.linalg.norm(emb[i])
            assert relative > 0.3, (name, CAPTIONS[i], CAPTIONS[j], relative)
            # also after mean-pooling over the real tokens: the whole-caption summary differs
            pooled_i = emb[i][mask[i] == 1].mean(0)
            pooled_j = emb[j][mask[j] == 1].mean(0)
            assert np.linalg.norm(pooled_i - pooled_j) / np.linalg.norm(pooled_i) > 0.05, (name, i, j)


def test_tiny_is_deterministic_by_seed(tiny_out):
    again = TextEmbedder.tiny(seed=0).embed(CAPTIONS)
    other = TextEmbedder.tiny(seed=1).embed(CAPTIONS)
    for name in ENCODER_NAMES:
        np.testing.assert_array_equal(again[name][0], tiny_out[name][0])
        assert np.abs(other[name][0] - tiny_out[name][0]).max() > 0.1
    # each encoder gets its own stream: ul2 and byt5 differ although both are T5s
    ul2 = TextEncoder.preset("ul2", "tiny", seed=0).model.embed_tokens.weight.asnumpy()
    byt5 = TextEncoder.preset("byt5", "tiny", seed=0).model.embed_tokens.weight.asnumpy()
    assert not np.allclose(ul2[:, :48], byt5)


def test_batching_and_run_length_do_not_change_results(tiny, tiny_out):
    # batch 2 runs the model at other padded lengths than batch 16; the full-length run is a third path
    chunked = tiny.embed(CAPTIONS, batch_size=2)
    for name in ENCODER_NAMES:
        np.testing.assert_allclose(chunked[name][0], tiny_out[name][0], atol=1e-5)
        # one prompt at a time: rows come back in prompt order although batches are sorted by length
        for row, caption in enumerate(CAPTIONS):
            single = tiny.encoders[name].encode([caption])
            np.testing.assert_allclose(tiny_out[name][0][row], single.emb[0], atol=1e-5)
    encoder = tiny.encoders["ul2"]
    tokenized = encoder.tokenize(CAPTIONS[:1])
    ids = np.zeros((1, 64), np.int32)
    ids[0, : len(tokenized[0].ids)] = tokenized[0].ids
    import mindspore as ms

    full = encoder.model(ms.Tensor(ids), ms.Tensor((ids > 0).astype(np.int32))).asnumpy()
    n = len(tokenized[0].ids)
    np.testing.assert_allclose(tiny_out["ul2"][0][0, :n], full[0, :n], atol=1e-5)


def test_truncation_warning_says_by_how_much(tiny):
    long = "x" * 100
    with pytest.warns(TextTruncationWarning) as caught:
        out = tiny.embed(["short", long, "y" * 70])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3  # one per encoder
    for name in ENCODER_NAMES:
        (message,) = [m for m in messages if m.startswith(name + ":")]
        # 64 tokens = 63 bytes + EOS: 100 bytes lose 37, 70 bytes lose 7
        assert "2 of 3 prompts exceed max_length 64" in message
        assert "by 7 to 37 tokens" in message and "prompt 1 lost the most (37 tokens" in message
        assert out[name][1][1].sum() == 64


def test_no_warning_when_everything_fits(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.embed(CAPTIONS)


def test_byt5_quoted_mode():
    assert quoted_text('a sign that says "OPEN" and “Café 24”') == "OPEN Café 24"
    assert quoted_text("no quotes here") == ""
    quoted = TextEmbedder.tiny(seed=0, names=["byt5"], byt5_text="quoted")
    full = TextEmbedder.tiny(seed=0, names=["byt5"])
    a = quoted.embed(['a neon sign that says "OPEN"'])["byt5"]
    b = full.embed(["OPEN"])["byt5"]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1].sum(), 5)


def test_subsets_max_lengths_and_null():
    embedder = TextEmbedder({"metaclip": "tiny", "ul2": "tiny"}, max_lengths={"ul2": 16}, seed=3)
    assert embedder.names == ("ul2", "metaclip")  # contract order whatever the mapping order
    assert embedder.max_lengths == {"ul2": 16, "metaclip": 64}
    null = embedder.embed_null()
    assert null["ul2"][1].sum() == 1 and null["metaclip"][1].sum() == 1  # EOS only
    empty = embedder.embed([])
    assert empty["ul2"][0].shape == (0, 16, 64)
    assert embedder.encoders["metaclip"].encode([]).emb.shape == (0, 64, 32)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown text encoder 'clip'"):
        TextEmbedder({"clip": "tiny"})
    with pytest.raises(ValueError, match="unknown text encoder 'ul3'"):
        TextEmbedder({"ul2": "tiny"}, max_lengths={"ul3": 5})
    with pytest.raises(ValueError, match="no text encoders"):
        TextEmbedder({})
    with pytest.raises(ValueError, match="byt5_text"):
        TextEmbedder({"byt5": "tiny"}, byt5_text="quotes")
    with pytest.raises(ValueError, match="unknown preset size 'huge'"):
        TextEmbedder({"byt5": "preset:huge:seed=0"})
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        TextEmbedder({"byt5": "."})
    embedder = TextEmbedder.tiny(names=["byt5"])
    with pytest.raises(TypeError, match="wrap a single prompt"):
        embedder.embed("a prompt")
    with pytest.raises(TypeError, match="prompt 1 is int"):
        embedder.embed(["a", 3])
    with pytest.raises(ValueError, match="named 'ul2'"):
        TextEmbedder({"byt5": TextEncoder.preset("ul2")})


def test_half_precision_weights_stay_close_to_float32():
    import mindspore as ms

    prompts = ["a red circle moving left", "a cat"]  # the second is padded: masks must survive float16
    for name in ENCODER_NAMES:
        full = TextEncoder.preset(name, "tiny", seed=0).encode(prompts)
        half = TextEncoder.preset(name, "tiny", seed=0, dtype=ms.float16).encode(prompts)
        assert np.isfinite(half.emb).all()
        scale = np.abs(full.emb).max()
        np.testing.assert_allclose(half.emb, full.emb, atol=0.02 * scale)


@pytest.mark.parametrize("name", ["ul2", "metaclip"])
def test_graph_compiled_model_equals_pynative(name):
    import mindspore as ms

    model = TextEncoder.preset(name, "tiny", seed=0).model
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(3, 300, size=(2, 24)).astype(np.int32))
    mask = np.ones((2, 24), np.int32)
    mask[1, 10:] = 0

    @ms.jit
    def compiled(ids, mask):
        return model(ids, mask)

    eager, graph = model(ids, ms.Tensor(mask)), compiled(ids, ms.Tensor(mask))
    eager, graph = (eager, graph) if name == "ul2" else (eager[0], graph[0])
    np.testing.assert_allclose(graph.asnumpy(), eager.asnumpy(), atol=1e-6)
