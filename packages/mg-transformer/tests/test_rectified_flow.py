"""Rectified flow: interpolation and target against numpy, timestep sampling, text dropout, the loss cell in both
modes, the schedules against an independent construction, the Euler sampler on a Gaussian mixture whose velocity
field is known in closed form, batched classifier-free guidance, seeds, and a tiny model overfitting one batch."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from mindspore.experimental.optim import AdamW

from mg_testing import Tolerance, check_jit_matches_pynative
from mg_transformer import (
    SIGMA_MIN,
    MovieGenTransformer,
    RectifiedFlowLoss,
    TransformerConfig,
    interpolate,
    linear_quadratic_schedule,
    linear_schedule,
    rectified_flow_loss,
    sample,
    sample_timesteps,
    velocity_target,
)
from mg_transformer.testing import dummy_inputs, randomize_parameters

RNG = np.random.default_rng(0)


def test_interpolation_endpoints_and_velocity_sign():
    x0 = RNG.standard_normal((3, 2, 1, 2, 2)).astype(np.float32)
    noise = RNG.standard_normal(x0.shape).astype(np.float32)
    t = np.array([0.0, 0.4, 1.0], np.float32)
    x_t = interpolate(Tensor(x0), Tensor(noise), Tensor(t)).asnumpy()
    tb = t[:, None, None, None, None]
    np.testing.assert_allclose(x_t, (1 - tb) * x0 + (SIGMA_MIN + (1 - SIGMA_MIN) * tb) * noise, atol=1e-6)
    np.testing.assert_allclose(x_t[0], x0[0] + SIGMA_MIN * noise[0], atol=1e-6)  # t = 0: data
    np.testing.assert_allclose(x_t[2], noise[2], atol=1e-6)  # t = 1: noise
    # v = -dx_t/dt: stepping t down by h along v moves x_t to x_{t-h}.
    v = velocity_target(Tensor(x0), Tensor(noise)).asnumpy()
    h = 1e-2
    earlier = interpolate(Tensor(x0), Tensor(noise), Tensor(t * 0 + 0.4 - h)).asnumpy()
    np.testing.assert_allclose(x_t[1] + h * v[1], earlier[1], atol=1e-5)


def test_timestep_sampling_distributions():
    ms.set_seed(0)
    t = sample_timesteps(20000, "logit-normal", loc=0.5, scale=0.8).asnumpy().astype(np.float64)
    logits = np.log(t / (1 - t))
    assert abs(logits.mean() - 0.5) < 0.03 and abs(logits.std() - 0.8) < 0.03
    u = sample_timesteps(20000, "uniform").asnumpy()
    assert u.min() > 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    with pytest.raises(ValueError, match="logit-normal"):
        sample_timesteps(4, "cosine")


def test_timesteps_from_a_numpy_generator_follow_its_draws():
    """With `rng`, t is the clamped sigmoid of the generator's own normal draws (or its uniforms), computed
    here with numpy; the same generator state gives the same times whatever MindSpore's seed is."""
    z = np.random.default_rng(7).standard_normal(64)
    expected = np.clip(1.0 / (1.0 + np.exp(-(0.3 + 1.5 * z))), 1e-5, 1 - 1e-5)
    for ms_seed in (0, 1):
        ms.set_seed(ms_seed)
        t = sample_timesteps(64, loc=0.3, scale=1.5, rng=np.random.default_rng(7)).asnumpy()
        np.testing.assert_allclose(t, expected, rtol=1e-6, atol=1e-7)
    u = np.random.default_rng(3).random(8)
    got = sample_timesteps(8, "uniform", eps=0.1, rng=np.random.default_rng(3)).asnumpy()
    np.testing.assert_allclose(got, np.clip(u, 0.1, 0.9), rtol=1e-6)


class RecordingModel:
    """Stands in for the transformer: records its inputs and returns 0.5 * x_t."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, embs, masks):
        self.calls.append(
            (x.asnumpy(), t.asnumpy(), [e.asnumpy() for e in embs], [m.asnumpy() for m in masks])
        )
        return x * 0.5


def test_loss_value_and_text_dropout_to_padded_null_text():
    x0 = RNG.standard_normal((3, 4, 1, 2, 2)).astype(np.float32)
    noise = RNG.standard_normal(x0.shape).astype(np.float32)
    t = np.array([0.2, 0.5, 0.9], np.float32)
    embs = (Tensor(RNG.standard_normal((3, 4, 6)).astype(np.float32)),)
    masks = (Tensor(np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)),)
    null = RNG.standard_normal((2, 6)).astype(np.float32)  # the empty prompt: 2 real tokens, stored unpadded

    model = RecordingModel()
    loss_cell = RectifiedFlowLoss(model, null_text_embs=[null], text_dropout=0.5)
    drop = Tensor(np.array([False, True, False]))
    loss = loss_cell(Tensor(x0), embs, masks, t=Tensor(t), noise=Tensor(noise), drop=drop).asnumpy()

    tb = t[:, None, None, None, None]
    x_t = (1 - tb) * x0 + (SIGMA_MIN + (1 - SIGMA_MIN) * tb) * noise
    target = x0 - (1 - SIGMA_MIN) * noise
    np.testing.assert_allclose(loss, np.mean((0.5 * x_t - target) ** 2), rtol=1e-5)

    seen_x, seen_t, (seen_emb,), (seen_mask,) = model.calls[0]
    np.testing.assert_allclose(seen_x, x_t, atol=1e-6)
    np.testing.assert_allclose(seen_t, t)
    np.testing.assert_array_equal(seen_emb[[0, 2]], embs[0].asnumpy()[[0, 2]])
    np.testing.assert_array_equal(seen_mask[[0, 2]], masks[0].asnumpy()[[0, 2]])
    np.testing.assert_array_equal(seen_emb[1], np.concatenate([null, np.zeros((2, 6), np.float32)]))
    np.testing.assert_array_equal(seen_mask[1], [1, 1, 0, 0])

    with pytest.raises(ValueError, match="needs null_text_embs"):
        RectifiedFlowLoss(model, text_dropout=0.1)


def test_functional_loss_equals_cell_and_jit_equals_pynative():
    config = TransformerConfig.preset("tiny")
    model = MovieGenTransformer(config)
    randomize_parameters(model, seed=3, std=0.1)
    latents, t, embs, masks = dummy_inputs(config, batch=2, latent_size=(1, 4, 4))
    noise = Tensor(RNG.standard_normal(latents.shape).astype(np.float32))
    nulls = [np.zeros((1, dim), np.float32) for dim in config.text_dims.values()]
    loss_cell = RectifiedFlowLoss(model, null_text_embs=nulls, text_dropout=0.3)
    drop = Tensor(np.array([True, False]))

    def with_keywords(cell, latents, embs, masks, t, noise, drop):
        return cell(latents, embs, masks, t=t, noise=noise, drop=drop)

    inputs = (latents, embs, masks, t, noise, drop)
    check_jit_matches_pynative(
        loss_cell, inputs, forward=with_keywords, grads=False, output_tol=Tolerance(rtol=1e-5)
    )
    keep_all = Tensor(np.array([False, False]))
    np.testing.assert_allclose(
        loss_cell(latents, embs, masks, t=t, noise=noise, drop=keep_all).asnumpy(),
        rectified_flow_loss(model, latents, embs, masks, t, noise).asnumpy(),
        rtol=1e-6,
    )
    ms.set_seed(1)
    random_loss = loss_cell(latents, embs, masks).asnumpy()  # samples t, noise and dropout itself
    assert np.isfinite(random_loss) and random_loss > 0


def reference_linear_quadratic(num_steps, threshold, linear_steps):
    """Built from step sizes: `linear_steps` steps of threshold / linear_steps, then steps growing by a constant
    increment chosen so the total is 1."""
    first = threshold / linear_steps
    q = num_steps - linear_steps
    increment = 0.0 if q == 1 else 2 * (1 - threshold - q * first) / (q * (q - 1))
    steps = [first] * linear_steps + [first + increment * k for k in range(q)]
    if q == 1:
        steps[-1] = 1 - threshold
    return 1 - np.concatenate([[0.0], np.cumsum(steps)])


@pytest.mark.parametrize(
    "num_steps, threshold, linear_steps", [(50, 0.025, 25), (10, 0.1, 5), (7, 0.3, 2), (3, 0.5, 2)]
)
def test_linear_quadratic_schedule(num_steps, threshold, linear_steps):
    times = linear_quadratic_schedule(num_steps, threshold, linear_steps)
    assert times.shape == (num_steps + 1,) and times[0] == 1.0 and times[-1] == 0.0
    assert np.all(np.diff(times) < 0)
    np.testing.assert_allclose(
        times, reference_linear_quadratic(num_steps, threshold, linear_steps), atol=1e-12
    )


def test_default_schedule_starts_like_a_1000_step_linear_schedule():
    times = linear_quadratic_schedule()  # 50 steps, threshold 0.025
    np.testing.assert_allclose(times[:26], 1 - np.arange(26) / 1000, atol=1e-12)  # the paper's first 25 steps
    steps = -np.diff(times)
    assert np.all(np.diff(steps[25:]) > 0)  # the quadratic part accelerates
    np.testing.assert_allclose(linear_schedule(4), [1, 0.75, 0.5, 0.25, 0])
    with pytest.raises(ValueError, match="monotone"):
        linear_quadratic_schedule(10, threshold=0.9, linear_steps=2)


class MixtureVelocity:
    """The exact velocity E[v | x_t] of rectified flow towards an isotropic 2-D Gaussian mixture."""

    def __init__(self, weights, means, stds):
        self.weights, self.means, self.stds = np.array(weights), np.array(means), np.array(stds)

    def __call__(self, x, t, embs, masks):
        x = x.asnumpy().astype(np.float64)
        t = float(t.asnumpy()[0])
        a, b = 1 - t, SIGMA_MIN + (1 - SIGMA_MIN) * t
        var = a**2 * self.stds**2 + b**2  # per component, isotropic
        diff = x[:, None, :] - a * self.means[None]  # (N, K, 2)
        log_p = np.log(self.weights) - (diff**2).sum(-1) / (2 * var) - np.log(var)
        post = np.exp(log_p - log_p.max(1, keepdims=True))
        post /= post.sum(1, keepdims=True)
        x0_mean = self.means[None] + (a * self.stds**2 / var)[None, :, None] * diff
        eps_mean = (b / var)[None, :, None] * diff
        v = (post[..., None] * (x0_mean - (1 - SIGMA_MIN) * eps_mean)).sum(1)
        return Tensor(v.astype(np.float32))


def test_sampler_reproduces_gaussian_mixture_moments():
    weights, means, stds = [0.3, 0.7], [[-2.0, 1.0], [1.5, -1.0]], [0.5, 0.3]
    field = MixtureVelocity(weights, means, stds)
    # 200 steps: Euler's bias (at 50 steps each mode comes out ~10% narrow) is then below the sampling noise.
    samples = sample(field, (4000, 2), (), guidance_scale=1.0, num_steps=200, seed=0).asnumpy()
    w, mu, s = np.array(weights), np.array(means), np.array(stds)
    mean = (w[:, None] * mu).sum(0)
    cov = sum(
        wk * (sk**2 * np.eye(2) + np.outer(mk, mk)) for wk, mk, sk in zip(w, mu, s, strict=True)
    ) - np.outer(mean, mean)
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.1)
    in_first = np.linalg.norm(samples - mu[0], axis=1) < np.linalg.norm(samples - mu[1], axis=1)
    assert abs(in_first.mean() - 0.3) < 0.025
    np.testing.assert_allclose(samples[in_first].std(0), [0.5, 0.5], atol=0.03)
    np.testing.assert_allclose(samples[~in_first].std(0), [0.3, 0.3], atol=0.02)


class TextVelocity:
    """v = -x + mean of each sample's first text embedding (masked tokens count as zeros); records inputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, embs, masks):
        self.calls.append(([e.asnumpy() for e in embs], [m.asnumpy() for m in masks]))
        shift = (embs[0] * masks[0][..., None]).mean(axis=(1, 2))
        return -x + shift.reshape(-1, 1)


def test_batched_guidance_equals_separate_passes_and_negative_prompt_replaces_null():
    batch, steps, scale = 2, 6, 3.0
    cond = RNG.standard_normal((batch, 3, 4)).astype(np.float32)
    null = RNG.standard_normal((5, 4)).astype(np.float32)  # 5 tokens, stored without batch
    negative = RNG.standard_normal((1, 2, 4)).astype(np.float32)

    def manual(uncond, length):
        """Euler with guidance, conditional and unconditional evaluated separately in numpy; `length` is the
        padded text length the model sees (its mean counts padding as zeros)."""
        x = np.random.default_rng(11).standard_normal((batch, 3)).astype(np.float64)
        times = linear_quadratic_schedule(steps, 0.1)
        c = cond.sum(axis=(1, 2))[:, None] / (length * 4)
        u = uncond.sum() / (length * 4)
        for i in range(steps):
            v_c, v_u = -x + c, -x + u
            x = x + (times[i] - times[i + 1]) * (v_u + scale * (v_c - v_u))
        return x

    model = TextVelocity()
    kwargs = dict(guidance_scale=scale, num_steps=steps, threshold=0.1, seed=11)
    out = sample(model, (batch, 3), [Tensor(cond)], null_text_embs=[Tensor(null)], **kwargs).asnumpy()
    np.testing.assert_allclose(out, manual(null, length=5), atol=1e-5)
    (embs,), (masks,) = model.calls[0]
    assert embs.shape == (2 * batch, 5, 4)  # one batch: conditional first, padded to the longer text
    np.testing.assert_array_equal(masks[:batch], [[1, 1, 1, 0, 0]] * batch)
    np.testing.assert_array_equal(masks[batch:], np.ones((batch, 5)))
    np.testing.assert_array_equal(embs[batch:], np.repeat(null[None], batch, 0))

    model = TextVelocity()
    out = sample(
        model,
        (batch, 3),
        [Tensor(cond)],
        null_text_embs=[Tensor(null)],
        negative_text_embs=[Tensor(negative)],
        **kwargs,
    ).asnumpy()
    (embs,), _ = model.calls[0]
    np.testing.assert_array_equal(embs[batch:, :2], np.repeat(negative, batch, 0))
    np.testing.assert_allclose(out, manual(negative, length=3), atol=1e-5)  # 2 negative tokens padded to 3

    with pytest.raises(ValueError, match="needs null_text_embs"):
        sample(model, (batch, 3), [Tensor(cond)], guidance_scale=2.0, num_steps=2)


def test_seed_makes_samples_reproducible():
    field = MixtureVelocity([1.0], [[0.5, -0.5]], [0.2])
    a = sample(field, (8, 2), (), guidance_scale=1.0, num_steps=4, seed=3).asnumpy()
    b = sample(field, (8, 2), (), guidance_scale=1.0, num_steps=4, seed=3).asnumpy()
    c = sample(field, (8, 2), (), guidance_scale=1.0, num_steps=4, seed=4).asnumpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    noise = np.random.default_rng(3).standard_normal((8, 2)).astype(np.float32)
    np.testing.assert_array_equal(
        sample(field, (8, 2), (), guidance_scale=1.0, num_steps=4, noise=noise).asnumpy(), a
    )


def test_tiny_model_overfits_one_batch():
    config = TransformerConfig.preset("tiny", num_layers=1)  # one block keeps graph compilation short
    model = MovieGenTransformer(config)
    model.init_weights(seed=0)
    latents, _, embs, masks = dummy_inputs(config, batch=2, latent_size=(1, 4, 4), seed=1)
    noise = Tensor(np.random.default_rng(2).standard_normal(latents.shape).astype(np.float32))
    t = Tensor(np.array([0.3, 0.7], np.float32))
    loss_cell = RectifiedFlowLoss(model)
    optimizer = AdamW(model.trainable_params(), lr=3e-3)
    grad_fn = ms.value_and_grad(loss_cell, None, optimizer.parameters)

    @ms.jit
    def train_step(latents, embs, masks, t, noise):
        loss, grads = grad_fn(latents, embs, masks, t, noise)
        optimizer(grads)
        return loss

    losses = [float(train_step(latents, embs, masks, t, noise).asnumpy()) for _ in range(20)]
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_sampling_the_tiny_model_eagerly_and_under_jit_agree():
    config = TransformerConfig.preset("tiny", num_layers=1)
    model = MovieGenTransformer(config)
    randomize_parameters(model, seed=4, std=0.1)
    _, _, embs, masks = dummy_inputs(config, batch=2, latent_size=(1, 4, 4))
    nulls = [np.zeros((1, dim), np.float32) for dim in config.text_dims.values()]
    kwargs = dict(null_text_embs=nulls, guidance_scale=4.0, num_steps=3, seed=5)
    steps = []

    def velocity(x, t, embs, masks):
        return model(x, t, embs, masks)

    eager = sample(
        model, (2, 16, 1, 4, 4), embs, masks, progress=lambda *a: steps.append(a), **kwargs
    ).asnumpy()
    jitted = sample(ms.jit(velocity), (2, 16, 1, 4, 4), embs, masks, **kwargs).asnumpy()
    assert [s[0] for s in steps] == [1, 2, 3] and steps[-1][2] == 0.0
    assert np.isfinite(eager).all() and np.abs(eager).max() > 0.1
    np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-4 * np.abs(eager).max())
