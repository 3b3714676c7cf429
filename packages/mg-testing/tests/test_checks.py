"""Every check passes on a tiny correct model and fails, with a message naming the fault, on a model broken in the
way the check exists to catch: a check that cannot fail is a defect."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mg_testing import (
    Tolerance,
    check_gradient_checkpointing,
    check_jit_matches_pynative,
    check_rejects_bad_inputs,
    check_save_load_round_trip,
    run_in_fresh_process,
)

# ----------------------------------------------------------------------------------------------------------------
# A tiny correct model: in-projection, residual tanh blocks (checkpointable), out-projection, a frozen buffer.


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    features: int = 3
    hidden: int = 8
    layers: int = 2
    out: int = 2
    scale: float = 1.0


class Block(nn.Cell):
    def __init__(self, hidden, rng):
        super().__init__()
        self.weight = Parameter(Tensor(rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.5))
        self.bias = Parameter(Tensor(rng.standard_normal(hidden).astype(np.float32) * 0.1))

    def construct(self, h):
        return ms.ops.tanh(ms.ops.matmul(h, self.weight.T) + self.bias)


class Tiny(nn.Cell):
    """x (B, features) float -> (y (B, out), pooled (B,)); random weights from `seed`."""

    def __init__(self, config: TinyConfig | None = None, seed: int = 0):
        super().__init__()
        self.config = config or TinyConfig()
        c, rng = self.config, np.random.default_rng(seed)
        self.w_in = Parameter(Tensor(rng.standard_normal((c.hidden, c.features)).astype(np.float32)))
        self.blocks = nn.CellList([Block(c.hidden, rng) for _ in range(c.layers)])
        self.w_out = Parameter(Tensor(rng.standard_normal((c.out, c.hidden)).astype(np.float32)))
        self.running = Parameter(Tensor(rng.uniform(0.5, 1.5, c.out).astype(np.float32)), requires_grad=False)
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = bool(enabled)

    def construct(self, x):
        self.check_input(x)
        h = ms.ops.matmul(x, self.w_in.T)
        for block in self.blocks:
            h = h + self.run_block(block, h)
        y = ms.ops.matmul(h, self.w_out.T) * self.running * self.config.scale
        return y, h.mean(axis=1)

    def run_block(self, block, h):
        if self.gradient_checkpointing and self.training:
            return ms.recompute(block, h)
        return block(h)

    def check_input(self, x):
        if x.ndim != 2:
            raise ValueError("expected x of rank 2 (B, features)")
        if x.shape[1] != self.config.features:
            raise ValueError("expected x with " + str(self.config.features) + " features")
        if not ms.ops.is_floating_point(x):
            raise ValueError("expected a floating-point x")

    def save_pretrained(self, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config_to_save()))
        np.savez(folder / "weights.npz", **self.state_to_save())

    def config_to_save(self) -> dict:
        return dataclasses.asdict(self.config)

    def state_to_save(self) -> dict:
        return {name: p.asnumpy() for name, p in self.parameters_and_names()}

    @classmethod
    def from_pretrained(cls, folder):
        folder = Path(folder)
        model = cls(TinyConfig(**json.loads((folder / "config.json").read_text())))
        with np.load(folder / "weights.npz") as weights:
            for name, p in model.parameters_and_names():
                if (
                    name in weights
                ):  # lenient on purpose: a forgotten parameter keeps its fresh initialisation
                    p.set_data(Tensor(weights[name]))
        return model


def tiny(seed=3):
    model = Tiny(seed=seed)
    model.set_train(True)
    return model


def batch(rows=4, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((rows, 3)).astype(np.float32))


def pooled(model, x):
    return model(x)[1]


def first_output_loss(outputs):
    return (outputs[0] * outputs[0]).sum() + outputs[1].sum()


# ----------------------------------------------------------------------------------------------------------------
# save / load


def test_round_trip_passes_and_keeps_the_folder(tmp_path):
    model = tiny()
    loaded = check_save_load_round_trip(model, (batch(),), folder=tmp_path / "ckpt")
    assert isinstance(loaded, Tiny) and loaded is not model
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "weights.npz"]
    check_save_load_round_trip(model, (batch(),))  # a temporary folder by default


class ForgetsAParameter(Tiny):
    def state_to_save(self):
        state = super().state_to_save()
        del state["blocks.1.bias"]
        return state


class ForgetsAConfigField(Tiny):
    def config_to_save(self):
        config = super().config_to_save()
        del config["scale"]
        return config


class SavesHalfPrecision(Tiny):
    def state_to_save(self):
        return {
            name: value.astype(np.float16).astype(np.float32)
            for name, value in super().state_to_save().items()
        }


class KeepsStateOutsideParameters(Tiny):
    """An offset set after construction: neither a parameter nor in the config, so it never reaches the folder."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset = 0.0

    def construct(self, x):
        y, h = super().construct(x)
        return y + self.offset, h


def test_round_trip_names_a_forgotten_parameter():
    with pytest.raises(AssertionError, match=r"parameter blocks\.1\.bias: max abs difference") as info:
        check_save_load_round_trip(ForgetsAParameter(seed=3), (batch(),))
    assert "blocks.0.bias" not in str(info.value)  # only what differs is reported
    # The parameter check needs no inputs: it fails even when no forward is compared.
    with pytest.raises(AssertionError, match=r"blocks\.1\.bias"):
        check_save_load_round_trip(ForgetsAParameter(seed=3))


def test_round_trip_names_a_lost_config_field_and_the_changed_output():
    model = ForgetsAConfigField(TinyConfig(scale=2.0), seed=3)
    with pytest.raises(
        AssertionError, match=r"config differs \(scale: 1\.0 after loading, 2\.0 saved\)"
    ) as info:
        check_save_load_round_trip(model, (batch(),))
    assert "output[0]: max abs difference" in str(info.value)


def test_round_trip_catches_lossy_weights_unless_a_tolerance_allows_them():
    model = SavesHalfPrecision(seed=3)
    with pytest.raises(AssertionError, match=r"parameter w_in: max abs difference [0-9.e-]+; worst at index"):
        check_save_load_round_trip(model, (batch(),))
    loose = Tolerance(rtol=1e-3, atol=1e-3)
    check_save_load_round_trip(model, (batch(),), param_tol=loose, output_tol=Tolerance(rtol=1e-2, atol=1e-2))


def test_round_trip_catches_state_outside_parameters_and_config():
    model = KeepsStateOutsideParameters(seed=3)
    model.offset = 0.5
    with pytest.raises(AssertionError, match=r"output\[0\]: max abs difference 0\.5") as info:
        check_save_load_round_trip(model, (batch(),))
    assert "parameter" not in str(info.value) and "config" not in str(info.value)


def test_round_trip_refuses_a_load_that_returns_the_same_object(tmp_path):
    model = tiny()
    with pytest.raises(AssertionError, match="itself"):
        check_save_load_round_trip(model, (batch(),), save=lambda m, folder: None, load=lambda folder: model)


def test_round_trip_with_custom_save_load_and_missing_parameters(tmp_path):
    def save(model, folder):
        folder.mkdir()
        np.savez(
            folder / "w.npz", **{n: p.asnumpy() for n, p in model.parameters_and_names() if n != "w_out"}
        )

    def load(folder):
        model = Tiny(TinyConfig(layers=3), seed=3)  # one block too many, and w_out not in the file
        with np.load(folder / "w.npz") as weights:
            for name, p in model.parameters_and_names():
                if name in weights:
                    p.set_data(Tensor(weights[name]))
        return model

    with pytest.raises(AssertionError) as info:
        check_save_load_round_trip(tiny(), folder=tmp_path / "custom", save=save, load=load)
    message = str(info.value)
    assert "unexpected ['blocks.2.bias', 'blocks.2.weight']" in message
    assert "config differs (layers: 3 after loading, 2 saved)" in message


# ----------------------------------------------------------------------------------------------------------------
# jit == PyNative

WARM = {"done": False}


class PythonStateModel(Tiny):
    """Branches in Python on module-level state its own forward updates (a 'warm-up done' flag): PyNative reads
    the flag on every call, jit reads it once while compiling and bakes that branch into the graph."""

    def construct(self, x):
        y, h = super().construct(x)
        if WARM["done"]:
            y = y * 2.0
        WARM["done"] = True
        return y, h


STEP = {"count": 0}


class ScaledGradient(nn.Cell):
    """Identity forward; the backward scales by a Python-side counter its own bprop updates."""

    def construct(self, x):
        return x

    def bprop(self, x, out, dout):
        STEP["count"] += 1
        return (dout * STEP["count"],)


class GradientOnlyDrift(Tiny):
    """Same forward in both modes, different gradients: the custom backward depends on Python state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaled = ScaledGradient()

    def construct(self, x):
        y, h = super().construct(x)
        return self.scaled(y), h


def test_jit_check_passes_with_parameter_and_input_gradients():
    pynative, _ = check_jit_matches_pynative(tiny(), (batch(),), grad_inputs=(0,))
    assert set(pynative.params) == {
        "w_in",
        "w_out",
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.1.weight",
        "blocks.1.bias",
    }
    assert pynative.inputs[0].shape == (4, 3) and np.abs(pynative.inputs[0]).max() > 0
    check_jit_matches_pynative(tiny(), (batch(),), forward=pooled, grads=False)
    check_jit_matches_pynative(tiny(), (batch(),), loss=first_output_loss)


def test_jit_check_catches_python_state_baked_in_at_compile_time(monkeypatch):
    monkeypatch.setitem(WARM, "done", False)
    with pytest.raises(
        AssertionError, match=r"jit forward differs from PyNative:\noutput\[0\]: max abs difference"
    ):
        check_jit_matches_pynative(PythonStateModel(seed=3), (batch(),))


def test_jit_check_catches_gradients_that_differ_when_outputs_agree(monkeypatch):
    monkeypatch.setitem(STEP, "count", 0)
    with pytest.raises(AssertionError, match="jit gradients differ from PyNative") as info:
        check_jit_matches_pynative(GradientOnlyDrift(seed=3), (batch(),), grad_inputs=(0,))
    message = str(info.value)
    assert "gradient of w_out: max abs difference" in message and "gradient of input 0" in message
    assert "loss" not in message.split("\n", 1)[1]  # the loss itself agrees


def test_jit_check_explains_lambdas_it_cannot_compile():
    with pytest.raises(TypeError, match="lambda"):
        check_jit_matches_pynative(tiny(), (batch(),), forward=lambda m, x: m(x)[0], grads=False)


def jit_check_of_the_tiny_model(seed):
    pynative, _ = check_jit_matches_pynative(tiny(seed), (batch(),))
    return pynative


def test_jit_check_in_a_fresh_process():
    gradients = run_in_fresh_process(jit_check_of_the_tiny_model, 5)
    here, _ = check_jit_matches_pynative(tiny(5), (batch(),))
    assert gradients.loss == pytest.approx(here.loss, rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Gradient checkpointing


class WithoutBias(nn.Cell):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def construct(self, h):
        return ms.ops.tanh(ms.ops.matmul(h, self.block.weight.T))


class RecomputesSomethingElse(Tiny):
    """The recompute path drops the block's bias: a second code path that is not the first."""

    def run_block(self, block, h):
        if self.gradient_checkpointing and self.training:
            return ms.recompute(WithoutBias(block), h)
        return block(h)


class SwitchDoesNothing(Tiny):
    def run_block(self, block, h):
        return block(h)


def test_checkpointing_check_passes_in_pynative_and_under_jit():
    plain, checkpointed = check_gradient_checkpointing(tiny, (batch(),), grad_inputs=(0,))
    assert set(plain.params) == set(checkpointed.params) and len(plain.params) == 6
    check_gradient_checkpointing(tiny, (batch(),), jit=True, grad_tol=Tolerance(rtol=1e-4, of_max=1e-5))


def test_checkpointing_check_catches_a_recompute_path_that_computes_something_else():
    def make():
        model = RecomputesSomethingElse(seed=3)
        model.set_train(True)
        return model

    with pytest.raises(AssertionError, match=r"gradient checkpointing in PyNative differs.*\nloss: max abs"):
        check_gradient_checkpointing(make, (batch(),))


def test_checkpointing_check_catches_a_switch_that_never_recomputes():
    def switch_does_nothing():
        model = SwitchDoesNothing(seed=3)
        model.set_train(True)
        return model

    with pytest.raises(AssertionError, match=r"no mindspore\.recompute call"):
        check_gradient_checkpointing(switch_does_nothing, (batch(),))
    with pytest.raises(AssertionError, match="is the model in training mode"):
        check_gradient_checkpointing(
            lambda: Tiny(seed=3), (batch(),), jit=True
        )  # eval mode: no checkpointing
    check_gradient_checkpointing(switch_does_nothing, (batch(),), require_recompute=False)  # told so: passes


def test_checkpointing_check_refuses_a_factory_that_is_not_deterministic():
    seeds = iter([1, 2])
    with pytest.raises(AssertionError, match=r"make_model\(\) built two different models:\nparameter w_in"):
        check_gradient_checkpointing(lambda: tiny(next(seeds)), (batch(),))


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs

BAD_INPUTS = [
    ((Tensor(np.zeros(3, np.float32)),), ValueError, "rank 2"),
    ((Tensor(np.zeros((2, 4), np.float32)),), ValueError, "3 features"),
    ((Tensor(np.zeros((2, 3), np.int32)),), ValueError, "floating-point"),
]


class Lenient(Tiny):
    """Makes every input fit: adds a batch axis, casts to float, crops or pads features. Never raises."""

    def check_input(self, x):
        pass

    def construct(self, x):
        if x.ndim == 1:
            x = x[None]
        x = x.astype(ms.float32)
        x = x[:, :3] if x.shape[1] >= 3 else ms.ops.pad(x, (0, 3 - x.shape[1]))
        return super().construct(x)


class VagueErrors(Tiny):
    def check_input(self, x):
        if x.ndim != 2:
            raise ValueError("bad input")
        if x.shape[1] != 3:
            raise TypeError("expected x with 3 features")


def test_bad_input_check_passes_on_clear_errors():
    check_rejects_bad_inputs(Tiny(), BAD_INPUTS, valid=(batch(),))


def test_bad_input_check_catches_inputs_accepted_silently():
    with pytest.raises(AssertionError, match=r"3 of 3 bad inputs not rejected") as info:
        check_rejects_bad_inputs(Lenient(), BAD_INPUTS, valid=(batch(),))
    message = str(info.value)
    assert (
        "case 0 (Tensor(Float32, (3,)),): accepted silently, expected ValueError matching 'rank 2'" in message
    )
    assert "case 2 (Tensor(Int32, (2, 3)),)" in message


def test_bad_input_check_catches_wrong_messages_and_types():
    with pytest.raises(AssertionError) as info:
        check_rejects_bad_inputs(VagueErrors(), BAD_INPUTS[:2])
    message = str(info.value)
    assert "case 0 (Tensor(Float32, (3,)),): ValueError 'bad input' does not match 'rank 2'" in message
    assert (
        "case 1 (Tensor(Float32, (2, 4)),): raised TypeError (expected x with 3 features), expected ValueError"
        in message
    )


def test_bad_input_check_needs_the_valid_call_to_work():
    with pytest.raises(
        AssertionError, match=r"the valid call \(Tensor\(Float32, \(2, 5\)\),\) raised ValueError"
    ):
        check_rejects_bad_inputs(Tiny(), BAD_INPUTS, valid=(Tensor(np.zeros((2, 5), np.float32)),))
    with pytest.raises(TypeError, match="must be a tuple"):
        check_rejects_bad_inputs(Tiny(), [(batch(), ValueError, "x")])
