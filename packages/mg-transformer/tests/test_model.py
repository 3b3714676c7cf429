"""MovieGenTransformer against a from-scratch numpy forward on the same weights, plus its seams, masks, modes
(PyNative vs mindspore.jit), gradient checkpointing and input errors."""

import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from mg_testing import (
    Tolerance,
    check_gradient_checkpointing,
    check_jit_matches_pynative,
    check_rejects_bad_inputs,
)
from mg_transformer import MovieGenTransformer, TransformerConfig
from mg_transformer.attention import ChunkedAttention, PlainAttention
from mg_transformer.pretrained import load_state_dict
from mg_transformer.testing import dummy_inputs, randomize_parameters

# --------------------------------------------------------------------------------------------------------------
# An independent float64 numpy implementation of the forward pass, written from the model description.


def np_rms(x, weight, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_attention(x, context, mask, p, prefix, heads, qk_norm, eps):
    """Multi-head attention of x (B, S, H) over context (B, L, H); mask (B, L) or None."""
    batch, _seq, hidden = x.shape
    dim = hidden // heads
    q = x @ p[prefix + "to_q.weight"].T
    k = context @ p[prefix + "to_k.weight"].T
    v = context @ p[prefix + "to_v.weight"].T
    out = np.zeros_like(q)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * dim, (h + 1) * dim)
            qh, kh, vh = q[b, :, cols], k[b, :, cols], v[b, :, cols]
            if qk_norm:
                qh = np_rms(qh, p[prefix + "norm_q.weight"], eps)
                kh = np_rms(kh, p[prefix + "norm_k.weight"], eps)
            scores = qh @ kh.T / math.sqrt(dim)
            if mask is not None:
                scores = np.where(mask[b][None, :] > 0, scores, -np.inf)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            out[b, :, cols] = (weights / weights.sum(-1, keepdims=True)) @ vh
    return out @ p[prefix + "to_out.weight"].T


def numpy_forward(model, latents, timesteps, embs, masks):
    cfg = model.config
    p = {name: param.asnumpy().astype(np.float64) for name, param in model.parameters_and_names()}
    x = latents.asnumpy().astype(np.float64)
    t = timesteps.asnumpy().astype(np.float64)
    batch, channels, frames, height, width = x.shape
    pt, ph, pw = cfg.patch_size
    nt, nh, nw = frames // pt, height // ph, width // pw
    eps, hidden = cfg.norm_eps, cfg.hidden_size

    # Tokens in (t, h, w) order, each patch flattened as (channel, dt, dh, dw).
    tokens = np.zeros((batch, nt * nh * nw, channels * pt * ph * pw))
    positions = np.zeros((nt * nh * nw, hidden))
    for i in range(nt):
        for j in range(nh):
            for k in range(nw):
                index = (i * nh + j) * nw + k
                patch = x[:, :, i * pt : (i + 1) * pt, j * ph : (j + 1) * ph, k * pw : (k + 1) * pw]
                tokens[:, index] = patch.reshape(batch, -1)
                positions[index] = p["pos_embed_t"][i] + p["pos_embed_h"][j] + p["pos_embed_w"][k]
    # The reference adds the position embedding at the start of every layer; DiT-style once, here.
    every_layer = cfg.pos_embed_every_layer
    h = tokens @ p["patch_embed.weight"].T + (0.0 if every_layer else positions)

    half = cfg.timestep_embed_dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = (t * cfg.timestep_scale)[:, None] * freqs[None]
    features = np.concatenate([np.cos(args), np.sin(args)], -1)
    t_emb = np_silu(features @ p["time_embed.linear_1.weight"].T) @ p["time_embed.linear_2.weight"].T
    modulation = (np_silu(t_emb) @ p["time_modulation.weight"].T).reshape(batch, 6, hidden)

    text = np.concatenate(
        [
            np_rms(
                e.asnumpy() @ p[f"text_projections.{i}.linear.weight"].T,
                p[f"text_projections.{i}.norm.weight"],
                eps,
            )
            for i, e in enumerate(embs)
        ],
        1,
    )
    text_mask = None if masks is None else np.concatenate([m.asnumpy() for m in masks], 1)

    for layer in range(cfg.num_layers):
        pre = f"blocks.{layer}."
        if every_layer:
            h = h + positions
        shift1, scale1, gate1, shift2, scale2, gate2 = [
            (modulation + p[pre + "scale_shift_table"])[:, n : n + 1] for n in range(6)
        ]
        normed = np_rms(h, p[pre + "norm1.weight"], eps) * (1 + scale1) + shift1
        h = h + gate1 * np_attention(normed, normed, None, p, pre + "attn.", cfg.num_heads, cfg.qk_norm, eps)
        h = h + np_attention(h, text, text_mask, p, pre + "cross_attn.", cfg.num_heads, cfg.qk_norm, eps)
        normed = np_rms(h, p[pre + "norm2.weight"], eps) * (1 + scale2) + shift2
        gate = np_silu(normed @ p[pre + "mlp.gate_proj.weight"].T) * (
            normed @ p[pre + "mlp.up_proj.weight"].T
        )
        h = h + gate2 * (gate @ p[pre + "mlp.down_proj.weight"].T)

    final = p["final_scale_shift_table"] + t_emb[:, None]
    h = np_rms(h, p["final_norm.weight"], eps) * (1 + final[:, 1:2]) + final[:, 0:1]
    patches = h @ p["proj_out.weight"].T
    out = np.zeros((batch, cfg.out_channels, frames, height, width))
    for i in range(nt):
        for j in range(nh):
            for k in range(nw):
                patch = patches[:, (i * nh + j) * nw + k].reshape(batch, cfg.out_channels, pt, ph, pw)
                out[:, :, i * pt : (i + 1) * pt, j * ph : (j + 1) * ph, k * pw : (k + 1) * pw] = patch
    return out


# --------------------------------------------------------------------------------------------------------------


def tiny(**overrides):
    return TransformerConfig.preset("tiny", **overrides)


def random_model(config, seed=0):
    """Random weights everywhere (so zero-initialised layers carry signal); std 0.1 keeps softmaxes soft, so
    float32 comparisons between code paths stay well conditioned."""
    model = MovieGenTransformer(config)
    randomize_parameters(model, seed=seed, std=0.1)
    return model


@pytest.mark.parametrize(
    "overrides, latent_size",
    [
        ({}, (2, 8, 8)),  # video, chunked attention (default on CPU)
        ({"qk_norm": True, "patch_size": (2, 2, 1), "attention_backend": "plain"}, (4, 4, 6)),
        # an image; 3 query blocks, online softmax over 2-3 key blocks
        ({"text_dims": {"byt5": 24}, "attention_chunk_size": 3, "attention_key_chunk_size": 4}, (1, 6, 4)),
        ({"pos_embed_every_layer": True}, (2, 8, 8)),  # the reference's placement of the position embedding
        ({"pos_embed_every_layer": True, "num_layers": 3, "attention_backend": "plain"}, (1, 4, 6)),
    ],
)
def test_forward_matches_numpy_reference(overrides, latent_size):
    config = tiny(**overrides)
    model = random_model(config)
    latents, t, embs, masks = dummy_inputs(config, batch=2, latent_size=latent_size)
    out = model(latents, t, embs, masks).asnumpy()
    assert out.shape == (2, config.out_channels, *latent_size)
    expected = numpy_forward(model, latents, t, embs, masks)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_position_embedding_placement_changes_the_output_and_keeps_the_weights():
    """Both placements share one set of weights (checkpoints load either way) but compute different functions."""
    once = random_model(tiny())
    every = MovieGenTransformer(tiny(pos_embed_every_layer=True))
    load_state_dict(every, {n: p.asnumpy() for n, p in once.parameters_and_names()})
    inputs = dummy_inputs(once.config, batch=1)
    a, b = once(*inputs).asnumpy(), every(*inputs).asnumpy()
    assert np.abs(a - b).max() > 1e-2 * np.abs(a).max()


def test_fresh_model_predicts_zero_velocity_and_has_reference_init():
    model = MovieGenTransformer(tiny())
    latents, t, embs, masks = dummy_inputs(model.config)
    assert np.abs(model(latents, t, embs, masks).asnumpy()).max() == 0.0  # zero-initialised output projection
    params = dict(model.parameters_and_names())
    assert np.abs(params["time_modulation.weight"].asnumpy()).max() == 0.0
    np.testing.assert_allclose(params["blocks.0.norm1.weight"].asnumpy(), 1.0)
    weight = params["blocks.0.mlp.up_proj.weight"].asnumpy()
    assert abs(weight.std() - 0.02) < 0.002


def test_padded_text_tokens_are_ignored():
    config = tiny()
    model = random_model(config, seed=1)
    latents, t, embs, masks = dummy_inputs(config, batch=3)
    out = model(latents, t, embs, masks).asnumpy()
    # Scribble over padded positions only: the output must not change.
    scribbled = []
    for emb, mask in zip(embs, masks, strict=True):
        e, m = emb.asnumpy().copy(), mask.asnumpy()
        e[m == 0] = 100.0
        scribbled.append(Tensor(e))
    np.testing.assert_allclose(model(latents, t, tuple(scribbled), masks).asnumpy(), out, atol=1e-5)
    # Changing a real token of sample 2 changes sample 2 only.
    e = embs[0].asnumpy().copy()
    e[2, 0] += 1.0
    changed = model(latents, t, (Tensor(e), *embs[1:]), masks).asnumpy()
    assert np.abs(changed[2] - out[2]).max() > 1e-4
    np.testing.assert_allclose(changed[:2], out[:2], atol=1e-6)


def test_plain_and_chunked_backends_agree():
    config = tiny(attention_chunk_size=8, attention_key_chunk_size=16)
    model = random_model(config, seed=2)
    plain = MovieGenTransformer(tiny(attention_backend="plain"))
    for (_, a), (_, b) in zip(plain.parameters_and_names(), model.parameters_and_names(), strict=True):
        a.set_data(b.value().copy())
    latents, t, embs, masks = dummy_inputs(config, latent_size=(2, 8, 6))
    assert isinstance(model.blocks[0].attn.core, ChunkedAttention)
    assert isinstance(plain.blocks[0].attn.core, PlainAttention)
    np.testing.assert_allclose(
        model(latents, t, embs, masks).asnumpy(), plain(latents, t, embs, masks).asnumpy(), atol=1e-5
    )


class RecordingCore(nn.Cell):
    """Wraps an attention core and records the shapes it was called with (what a parallel wrapper would see)."""

    def __init__(self, inner, calls):
        super().__init__()
        self.inner = inner
        self.calls = calls

    def construct(self, q, k, v, mask=None):
        self.calls.append((q.shape, k.shape, v.shape, None if mask is None else mask.shape))
        return self.inner(q, k, v, mask)


class RecordingBlock(nn.Cell):
    def __init__(self, inner, inputs):
        super().__init__()
        self.inner = inner
        self.inputs = inputs

    def construct(self, x, *args):
        self.inputs.append(x.asnumpy())
        return self.inner(x, *args)


def test_parallel_seams_core_and_blocks():
    """docs/contracts.md 5: replaceable `core(q, k, v, mask)` in BNSD; blocks CellList; PE added once."""
    config = tiny()
    model = random_model(config, seed=3)
    latents, t, embs, masks = dummy_inputs(config, batch=2, latent_size=(2, 4, 6))
    expected = model(latents, t, embs, masks).asnumpy()
    calls, inputs = [], []
    assert isinstance(model.blocks, nn.CellList)
    for block in model.blocks:
        block.attn.core = RecordingCore(block.attn.core, calls)
        block.cross_attn.core = RecordingCore(block.cross_attn.core, calls)
    model.blocks = nn.CellList([RecordingBlock(block, inputs) for block in model.blocks])
    np.testing.assert_allclose(model(latents, t, embs, masks).asnumpy(), expected, atol=1e-6)

    heads, head_dim, tokens = config.num_heads, config.head_dim, 2 * 2 * 3
    text_len = sum(m.shape[1] for m in masks)
    assert calls[0] == ((2, heads, tokens, head_dim),) * 3 + (None,)
    assert calls[1] == ((2, heads, tokens, head_dim),) + ((2, heads, text_len, head_dim),) * 2 + (
        (2, 1, 1, text_len),
    )
    assert len(calls) == 2 * config.num_layers

    # The input of block 0 is patch embedding + position embedding; block 1 gets block 0's output unchanged.
    p = {name: param.asnumpy() for name, param in model.parameters_and_names()}
    lat = latents.asnumpy()
    tokens_np = lat.reshape(2, 16, 2, 1, 2, 2, 3, 2).transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(2, 12, 64)
    pos = (
        p["pos_embed_t"][:2, None, None] + p["pos_embed_h"][None, :2, None] + p["pos_embed_w"][None, None, :3]
    ).reshape(12, -1)
    np.testing.assert_allclose(inputs[0], tokens_np @ p["patch_embed.weight"].T + pos, atol=1e-5)
    block0 = model.blocks[0].inner
    t_emb = model.time_embed(t)
    modulation = model.time_modulation(ms.mint.nn.functional.silu(t_emb)).reshape(2, 6, -1)
    text, text_mask = model._text_tokens(embs, masks)
    np.testing.assert_allclose(
        inputs[1], block0(Tensor(inputs[0]), modulation, text, text_mask).asnumpy(), atol=1e-5
    )


def test_gradient_checkpointing_gives_same_gradients():
    config = tiny()
    inputs = dummy_inputs(config, batch=2, latent_size=(2, 4, 4))
    # loss mean(output ** 2); loss rtol 1e-6, every parameter gradient rtol 1e-5 + atol 1e-7
    plain, _ = check_gradient_checkpointing(lambda: random_model(config, seed=4), inputs)
    assert all(np.abs(g).sum() > 0 for g in plain.params.values())


def test_jit_forward_and_gradients_equal_pynative():
    config = tiny()
    inputs = dummy_inputs(config, batch=2, latent_size=(1, 4, 4))  # an image batch
    check_jit_matches_pynative(random_model(config, seed=5), inputs, grads=False)  # rtol 1e-5 + 1e-5 of max
    # Checkpointed under jit vs plain PyNative; graph mode sums in another order: float32 rounding only.
    check_gradient_checkpointing(
        lambda: random_model(config, seed=5),
        inputs,
        jit=True,
        loss_tol=Tolerance(rtol=1e-5),
        grad_tol=Tolerance(rtol=1e-4, of_max=1e-5),
    )


def test_bad_inputs_raise_clear_errors():
    config = tiny()
    model = MovieGenTransformer(config)
    latents, t, embs, masks = dummy_inputs(config, latent_size=(2, 4, 4))

    def latents_of(shape):
        return Tensor(np.zeros(shape, np.float32))

    order = r"expected 3 text embeddings in the order \('ul2', 'byt5', 'metaclip'\)"
    bad = [
        ((latents_of((2, 8, 2, 4, 4)), t, embs, masks), ValueError, "16, T, H, W"),
        ((latents_of((2, 16, 2, 4, 5)), t, embs, masks), ValueError, "W=5 is not divisible"),
        ((latents_of((2, 16, 2, 4, 66)), t, embs, masks), ValueError, "pos_embed_max_size"),
        ((latents, t, embs[:2], masks[:2]), ValueError, order),
        ((latents, t[:1], embs, masks), ValueError, r"timesteps must be \(2,\)"),
        ((latents, t.reshape(2, 1), embs, masks), ValueError, r"timesteps must be \(2,\)"),
        ((latents, t, (embs[0][:, :, :-1], *embs[1:]), masks), ValueError, "text embedding ul2 must be"),
        ((latents, t, (embs[0][:1], *embs[1:]), masks), ValueError, "text embedding ul2 must be"),
        ((latents, t, embs, (masks[0], masks[1][:, :-1], masks[2])), ValueError, "text mask byt5 must be"),
    ]
    check_rejects_bad_inputs(model, bad, valid=(latents, t, embs, masks))


def test_missing_masks_mean_no_padding():
    config = tiny(text_dims={"ul2": 64, "metaclip": 48})
    model = random_model(config, seed=6)
    latents, t, embs, _ = dummy_inputs(config, latent_size=(1, 4, 4), padding=False)
    ones = tuple(Tensor(np.ones(e.shape[:2], np.float32)) for e in embs)
    np.testing.assert_allclose(
        model(latents, t, embs).asnumpy(), model(latents, t, embs, ones).asnumpy(), atol=1e-6
    )


def test_init_is_deterministic_given_a_seed():
    def weights(model):
        return dict(model.parameters_and_names())["blocks.0.attn.to_q.weight"].asnumpy()

    ms.set_seed(123)
    first = weights(MovieGenTransformer(tiny()))
    ms.set_seed(123)
    np.testing.assert_array_equal(weights(MovieGenTransformer(tiny())), first)
    model = MovieGenTransformer(tiny())
    model.init_weights(seed=7)
    again = MovieGenTransformer(tiny())
    again.init_weights(seed=7)
    np.testing.assert_array_equal(weights(model), weights(again))
    assert not np.array_equal(weights(model), first)


def test_a_lazy_model_holds_no_weights_and_gives_the_initial_values_one_at_a_time():
    """`lazy` builds the model without materialising its parameters (for parallel layouts that cut them
    first); `initial_values` yields exactly what `init_weights` writes for the same seed."""
    from pathlib import Path

    def rss_mb() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    big = tiny(num_layers=8, hidden_size=512, ffn_size=1408, num_heads=8)  # ~25M parameters: 100 MB of fp32
    before = rss_mb()
    lazy = MovieGenTransformer.lazy(big)
    assert rss_mb() - before < 30
    assert sum(p.size for p in lazy.get_parameters()) > 20e6
    config = tiny()
    eager = MovieGenTransformer(config)
    eager.init_weights(seed=7)
    values = dict(MovieGenTransformer.lazy(config).initial_values(seed=7))
    params = dict(eager.parameters_and_names())
    assert values.keys() == params.keys()
    for name, value in values.items():
        np.testing.assert_array_equal(value, params[name].asnumpy(), err_msg=name)
