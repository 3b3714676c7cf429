"""Movie Gen Edit: the condition latent concatenated along channels and the task embeddings. From a T2V model it
is exactly T2V (any condition, task "none"); a task and, once trained, the condition steer the output and get
gradients; the folder round-trips; bad inputs are named."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mg_transformer import MovieGenTransformer, TransformerConfig
from mg_transformer.editing import DEFAULT_TASKS, EditTransformer
from mg_transformer.testing import dummy_inputs, randomize_parameters


def _models(seed: int = 0):
    config = TransformerConfig.preset("tiny", text_dims={"ul2": 12, "byt5": 10, "metaclip": 8})
    t2v = MovieGenTransformer(config)
    randomize_parameters(t2v, seed=seed, std=0.1)  # the zero-initialised output layers carry signal
    return t2v, EditTransformer.from_t2v(t2v, seed=seed)


def _tasks(*indices: int) -> Tensor:
    return Tensor(np.array(indices, np.int32))


@pytest.mark.parametrize("condition", ["black", "random"])
def test_from_t2v_with_no_task_is_exactly_the_t2v_model(condition):
    t2v, edit = _models()
    latents, t, embs, masks = dummy_inputs(t2v.config, batch=3)
    shape = latents.shape
    value = (
        np.full(shape, -1.0, np.float32)
        if condition == "black"
        else np.random.default_rng(1).standard_normal(shape)
    )
    cond = Tensor(value.astype(np.float32))
    expected = t2v(latents, t, embs, masks).asnumpy()
    assert np.abs(expected).max() > 0.1
    got = edit(latents, t, embs, masks, cond, _tasks(0, 0, 0)).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # a task's tokens take part in cross-attention: that sample changes, the task-free one stays T2V
    mixed = edit(latents, t, embs, masks, cond, _tasks(1, 0, 3)).asnumpy()
    np.testing.assert_allclose(mixed[1], expected[1], rtol=0, atol=1e-6)
    for sample in (0, 2):
        assert np.abs(mixed[sample] - expected[sample]).max() > 1e-3


def test_the_condition_and_task_get_gradients_and_steer_a_trained_model():
    t2v, edit = _models()
    latents, t, embs, masks = dummy_inputs(t2v.config, batch=2)
    cond = Tensor(np.random.default_rng(2).standard_normal(latents.shape).astype(np.float32))
    tasks = _tasks(1, 2)
    params = [edit.embedding, edit.tokens.weight, edit.time.weight, edit.transformer.patch_embed.weight]

    def loss(condition):
        return (edit(latents, t, embs, masks, condition, tasks) ** 2).mean()

    grads = ms.grad(loss, grad_position=None, weights=params)(cond)
    for param, grad in zip(params, grads, strict=True):
        assert np.abs(grad.asnumpy()).max() > 0, param.name
    features = edit.transformer.patch_embed.weight.shape[1] // 2
    assert np.abs(grads[3].asnumpy()[:, features:]).max() > 0  # the condition's (zero) columns learn
    rng = np.random.default_rng(3)
    weight = edit.transformer.patch_embed.weight.asnumpy()
    weight[:, features:] = 0.05 * rng.standard_normal(weight[:, features:].shape)
    edit.transformer.patch_embed.weight.set_data(Tensor(weight))
    other = Tensor(rng.standard_normal(latents.shape).astype(np.float32))
    a = edit(latents, t, embs, masks, cond, tasks).asnumpy()
    b = edit(latents, t, embs, masks, other, tasks).asnumpy()
    assert np.abs(a - b).max() > 1e-3


def test_the_saved_folder_gives_the_same_model(tmp_path):
    t2v, edit = _models()
    edit.time.weight.set_data(Tensor(np.full(edit.time.weight.shape, 0.01, np.float32)))  # as after training
    edit.save_pretrained(tmp_path / "edit")
    loaded = EditTransformer.from_pretrained(tmp_path / "edit")
    assert loaded.tasks == DEFAULT_TASKS and loaded.task_index("remove") == 3
    latents, t, embs, masks = dummy_inputs(t2v.config, batch=2)
    cond = Tensor(np.ones(latents.shape, np.float32))
    np.testing.assert_array_equal(
        loaded(latents, t, embs, masks, cond, _tasks(2, 4)).asnumpy(),
        edit(latents, t, embs, masks, cond, _tasks(2, 4)).asnumpy(),
    )


def test_bad_inputs_are_named(tmp_path):
    t2v, edit = _models()
    latents, t, embs, masks = dummy_inputs(t2v.config, batch=2)
    with pytest.raises(ValueError, match="condition latent must have the noisy latent's shape"):
        edit(latents, t, embs, masks, latents[:, :, :1], _tasks(0, 0))
    with pytest.raises(ValueError, match=r"task must be \(2,\)"):
        edit(latents, t, embs, masks, latents, _tasks(0))
    with pytest.raises(ValueError, match="in_channels = 2 x out_channels"):
        EditTransformer(t2v)
    with pytest.raises(ValueError, match="starting with 'none'"):
        EditTransformer.from_t2v(t2v, tasks=("recolor",))
    with pytest.raises(ValueError, match="unknown editing task 'blur'"):
        edit.task_index("blur")
    with pytest.raises(FileNotFoundError, match=r"task_embedding\.safetensors"):
        edit.transformer.save_pretrained(tmp_path / "only" / "transformer")
        EditTransformer.from_pretrained(tmp_path / "only")
