"""PT2V: the reference-image tokens in front of the text; "no reference" is exactly the T2V model."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mg_transformer import MovieGenTransformer, TransformerConfig
from mg_transformer.personalized import PersonalizedTransformer
from mg_transformer.testing import dummy_inputs, randomize_parameters
from mg_transformer.vision import CLIPVisionConfig, CLIPVisionEncoder

VISION = CLIPVisionConfig(
    hidden_size=24,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=16,
    patch_size=8,
)


def _models(seed: int = 0):
    config = TransformerConfig.preset("tiny", text_dims={"ul2": 12, "byt5": 10, "metaclip": 8})
    transformer = MovieGenTransformer(config)
    randomize_parameters(transformer, seed=seed, std=0.1)  # the zero-initialised output layers carry signal
    vision = CLIPVisionEncoder(VISION).init_weights(seed)
    return transformer, PersonalizedTransformer(transformer, vision, seed=seed)


def _pixels(batch: int, seed: int) -> Tensor:
    return Tensor(np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32))


@pytest.mark.parametrize("padded_text", [True, False])
def test_no_reference_is_exactly_the_t2v_model(padded_text):
    transformer, pt2v = _models()
    latents, t, embs, masks = dummy_inputs(transformer.config, batch=3, padding=padded_text)
    masks = masks if padded_text else None
    t2v = transformer(latents, t, embs, masks).asnumpy()
    assert np.abs(t2v).max() > 0.1  # a model that outputs something
    np.testing.assert_array_equal(pt2v(latents, t, embs, masks).asnumpy(), t2v)  # no pixels: the T2V call
    off = pt2v(latents, t, embs, masks, _pixels(3, 1), Tensor(np.zeros(3, np.float32))).asnumpy()
    np.testing.assert_allclose(off, t2v, rtol=0, atol=1e-6)
    # per sample: the sample without a reference is T2V's, the two with one are not
    mixed = pt2v(latents, t, embs, masks, _pixels(3, 1), Tensor(np.array([1, 0, 1], np.float32))).asnumpy()
    np.testing.assert_allclose(mixed[1], t2v[1], rtol=0, atol=1e-6)
    for sample in (0, 2):
        assert np.abs(mixed[sample] - t2v[sample]).max() > 1e-3


def test_the_reference_image_steers_the_output_and_gets_gradients():
    transformer, pt2v = _models()
    latents, t, embs, masks = dummy_inputs(transformer.config, batch=2)
    a = pt2v(latents, t, embs, masks, _pixels(2, 1)).asnumpy()
    b = pt2v(latents, t, embs, masks, _pixels(2, 2)).asnumpy()
    assert np.abs(a - b).max() > 1e-3

    def loss(pixels, flags):
        return (pt2v(latents, t, embs, masks, pixels, flags) ** 2).mean()

    params = pt2v.trainable_params()
    names = [p.name for p in params]
    assert any(n.startswith("vision.") for n in names) and any(
        n.startswith("reference_projection.") for n in names
    )
    grads = ms.grad(loss, None, params)(_pixels(2, 1), Tensor(np.ones(2, np.float32)))
    by_name = dict(zip(names, grads, strict=True))
    assert np.abs(by_name["vision.patch_weight"].asnumpy()).max() > 0
    assert np.abs(by_name["reference_projection.linear.weight"].asnumpy()).max() > 0
    # without a reference nothing reaches the new parts
    grads = ms.grad(loss, None, params)(_pixels(2, 1), Tensor(np.zeros(2, np.float32)))
    by_name = dict(zip(names, grads, strict=True))
    assert np.abs(by_name["vision.patch_weight"].asnumpy()).max() == 0
    assert np.abs(by_name["reference_projection.linear.weight"].asnumpy()).max() == 0

    pt2v.set_vision_trainable(False)  # stages 1-2 of PT2V training
    frozen = [p.name for p in pt2v.trainable_params()]
    assert not any(n.startswith("vision.") for n in frozen) and "reference_projection.linear.weight" in frozen


def test_from_t2v_and_the_saved_folder_give_the_same_model(tmp_path):
    transformer, pt2v = _models()
    transformer.save_pretrained(tmp_path / "t2v")
    (tmp_path / "clip").mkdir()
    pt2v.vision.save_pretrained(tmp_path / "clip")
    fresh = PersonalizedTransformer.from_t2v(tmp_path / "t2v", tmp_path / "clip", seed=0)
    latents, t, embs, masks = dummy_inputs(transformer.config, batch=2)
    pixels = _pixels(2, 3)
    want = pt2v(latents, t, embs, masks, pixels).asnumpy()
    np.testing.assert_allclose(fresh(latents, t, embs, masks, pixels).asnumpy(), want, rtol=0, atol=1e-6)

    randomize_parameters(pt2v.reference_projection, seed=5, std=0.3)  # a trained projection is saved too
    want = pt2v(latents, t, embs, masks, pixels).asnumpy()
    pt2v.save_pretrained(tmp_path / "pt2v")
    loaded = PersonalizedTransformer.from_pretrained(tmp_path / "pt2v")
    np.testing.assert_allclose(loaded(latents, t, embs, masks, pixels).asnumpy(), want, rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="a PT2V folder holds transformer/, vision/"):
        PersonalizedTransformer.from_pretrained(tmp_path / "t2v")


def test_bad_reference_inputs_are_named():
    transformer, pt2v = _models()
    latents, t, embs, masks = dummy_inputs(transformer.config, batch=2)
    with pytest.raises(ValueError, match="3 reference images for a batch of 2"):
        pt2v(latents, t, embs, masks, _pixels(3, 1))
    with pytest.raises(ValueError, match=r"reference_mask must be \(2,\)"):
        pt2v(latents, t, embs, masks, _pixels(2, 1), Tensor(np.ones((2, 1), np.float32)))
    with pytest.raises(ValueError, match=r"expected CLIP-normalised pixels \(B, 3, 16, 16\)"):
        pt2v(latents, t, embs, masks, Tensor(np.zeros((2, 3, 8, 8), np.float32)))
