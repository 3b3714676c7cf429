"""The config dataclasses of every mg-train command; each field's `help` is what `--help` prints.

YAML files (bundled ones under `mg_train/configs/`, or your own) fill these through `load_config`, and any field
can be overridden on the command line as `section.field=value`. Each command's config has a `check()` that
rejects out-of-range values and settings that contradict each other, naming the field and the value; the CLI
calls it before anything else runs, and every `run(cfg)` calls it first. Checks that need files or a model's
shape (does the manifest exist, do the sizes fit the TAE) happen when a run starts, also before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mg_train.config.loader import ConfigError


def opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and the help text shown by `mg-train <command> --help`."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def need(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise ConfigError `key=value: rule` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={_shown(value)}: {rule}")


def _in_unit(value: float | None, low_open: bool = False) -> bool:
    return value is None or (((value > 0.0) if low_open else (value >= 0.0)) and value < 1.0)


# -- shared sections ----------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    lr: float = opt(1e-4, "peak learning rate")
    betas: tuple[float, float] = opt((0.9, 0.999), "AdamW betas")
    eps: float = opt(1e-8, "AdamW epsilon")
    weight_decay: float = opt(0.0, "AdamW weight decay (not applied to norms, biases and embedding tables)")
    schedule: Literal["constant", "cosine"] = opt(
        "constant", "LR after warmup: constant, or cosine to min_lr"
    )
    warmup_steps: int = opt(0, "linear warmup steps")
    min_lr: float = opt(0.0, "final LR of the cosine schedule")
    grad_clip: float | None = opt(1.0, "clip the global gradient norm to this value (null: no clipping)")
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step")
    ema_decay: float | None = opt(
        None, "keep an exponential moving average of the weights (e.g. 0.999); null: off"
    )
    plateau_factor: float | None = opt(
        None, "multiply the LR by this on a validation-loss plateau (Movie Gen: 0.5); null: off"
    )
    plateau_patience: int = opt(5, "validation checks without improvement before the LR is reduced")
    plateau_min_lr: float = opt(1e-6, "the plateau reduction never goes below this LR")

    def check(self) -> None:
        need(self.lr >= 0, "optim.lr", self.lr, "must be >= 0")
        need(all(0.0 <= b < 1.0 for b in self.betas), "optim.betas", self.betas, "each must be in [0, 1)")
        need(self.eps > 0, "optim.eps", self.eps, "must be > 0")
        need(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        need(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "must be >= 0")
        need(self.min_lr >= 0, "optim.min_lr", self.min_lr, "must be >= 0")
        need(
            self.grad_clip is None or self.grad_clip > 0,
            "optim.grad_clip",
            self.grad_clip,
            "must be > 0 or null",
        )
        need(self.grad_accum >= 1, "optim.grad_accum", self.grad_accum, "must be >= 1")
        need(
            _in_unit(self.ema_decay, low_open=True),
            "optim.ema_decay",
            self.ema_decay,
            "must be in (0, 1) or null",
        )
        need(
            _in_unit(self.plateau_factor, low_open=True),
            "optim.plateau_factor",
            self.plateau_factor,
            "must be in (0, 1) or null",
        )
        need(self.plateau_patience >= 0, "optim.plateau_patience", self.plateau_patience, "must be >= 0")
        need(self.plateau_min_lr >= 0, "optim.plateau_min_lr", self.plateau_min_lr, "must be >= 0")


@dataclass
class RunConfig:
    output_dir: str = opt(
        "runs/train", "run directory: checkpoints/, metrics.jsonl, config.yaml, final model"
    )
    steps: int = opt(1000, "optimizer steps to train")
    seed: int = opt(0, "seed of the data order, noise, timesteps and text dropout")
    log_every: int = opt(10, "print a progress line every N steps (every step is written to metrics.jsonl)")
    val_every: int = opt(0, "validation loss every N steps (0: never)")
    val_batches: int = opt(4, "batches of the validation set per validation")
    save_every: int = opt(500, "checkpoint every N steps (and always at the end and on SIGTERM/Ctrl-C)")
    keep_last: int = opt(
        3, "checkpoints to keep (of this run: another run's in the same folder are never pruned)"
    )
    new_run_in_used_folder: bool = opt(
        False,
        "with resume null, start a new run in an output_dir that already holds one (its checkpoints are kept and "
        "never resumed or pruned by the new run); without it that start fails",
    )
    resume: str | None = opt(
        "auto",
        "'auto': continue from the latest checkpoint in output_dir if any; a checkpoint path; null: start fresh",
    )
    jit: bool = opt(
        True,
        "compile the forward+backward pass and the EMA update with mindspore.jit (faster on CPU and Ascend) in runs "
        "of at least jit_min_steps steps; with jit_optimizer_min_steps also the optimizer step",
    )
    jit_min_steps: int = opt(
        100,
        "with jit, compile only runs of at least this many steps: shorter ones (debug runs, smoke tests) run "
        "eagerly, since compiling costs 8-30 s once on CPU and breaks even after ~30 (tiny TAE) to ~100 (debug "
        "transformer) steps (0: always compile)",
    )
    jit_optimizer_min_steps: int = opt(
        500,
        "with jit, also compile the optimizer step (gradient norm, clipping, AdamW kernels) in runs of at least "
        "this many steps: compiling costs ~6 s once and saves ~0.03 s per step for the quickstart model",
    )
    precision: Literal["auto", "fp32", "bf16"] = opt(
        "auto", "auto = bf16 on Ascend, fp32 elsewhere (bf16 matmul has no CPU kernel)"
    )
    max_nonfinite_steps: int = opt(5, "consecutive NaN/inf steps (skipped) before the run stops")
    step_timeout: float = opt(
        1800.0,
        "seconds a rank may go without finishing a step (or a validation, save or export) before it prints "
        "where every thread stands and exits 1: a hung collective never hangs the job (0: off); the first step "
        "includes graph compilation",
    )
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass to save memory")
    num_workers: int = opt(0, "data-loading worker processes (0: load in the training process)")

    def check(self) -> None:
        need(bool(self.output_dir), "train.output_dir", self.output_dir, "must name a folder")
        need(self.steps >= 0, "train.steps", self.steps, "must be >= 0")
        for key in ("log_every", "save_every", "keep_last", "val_batches", "max_nonfinite_steps"):
            need(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "must be >= 1")
        need(self.val_every >= 0, "train.val_every", self.val_every, "must be >= 0 (0: never)")
        need(self.num_workers >= 0, "train.num_workers", self.num_workers, "must be >= 0")
        need(self.step_timeout >= 0, "train.step_timeout", self.step_timeout, "must be >= 0 (0: off)")
        for key in ("jit_min_steps", "jit_optimizer_min_steps"):
            need(getattr(self, key) >= 0, f"train.{key}", getattr(self, key), "must be >= 0")

    @property
    def compiles_step(self) -> bool:
        """Whether forward+backward (and validation and EMA) run compiled: `jit` in a run long enough to pay."""
        return self.jit and self.steps >= self.jit_min_steps

    @property
    def compiles_optimizer(self) -> bool:
        """Whether the optimizer step runs compiled too (`jit_optimizer_min_steps`)."""
        return self.compiles_step and self.steps >= self.jit_optimizer_min_steps


@dataclass
class DataConfig:
    manifest: str = opt("", "CSV manifest of the training data (column `video`, optional `caption`)")
    root: str | None = opt(
        None, "folder the manifest's paths are relative to (default: the manifest's folder)"
    )
    val_manifest: str | None = opt(None, "CSV manifest of held-out data for validation")
    frames: int = opt(16, "frames per training clip (1 for images); also the validation clips' length")
    durations: dict[int, int] = opt(
        {},
        "duration buckets: frames -> batch size per rank, e.g. {16: 8, 32: 4}; each clip trains at the longest "
        "duration it holds, every batch comes from one bucket (empty: one bucket of `frames` x `batch_size`)",
    )
    size: tuple[int, int] = opt((64, 64), "training resolution (height, width); multiples of 16")
    stride: int = opt(1, "frame stride of the sampled clips")
    batch_size: int = opt(4, "samples per micro-batch on each data-parallel rank")
    image_batch_size: int | None = opt(None, "batch size of image buckets (default: batch_size)")
    image_ratio: float | None = opt(
        None, "fraction of steps drawn from images for joint image/video training"
    )
    aspect_ratios: list[str] = opt(["1:1"], "aspect-ratio buckets, e.g. ['1:1', '16:9', '9:16']")
    random_crop: bool = opt(False, "random instead of centre crops")
    hflip: bool = opt(False, "random horizontal flips (off for data whose captions name left/right)")
    max_substituted_fraction: float = opt(
        0.1,
        "stop when more than this share of a rank's training samples (after 20) had to be replaced because their "
        "file could not be read (each replacement is counted in metrics.jsonl as `substituted`)",
    )
    cache_memory_mb: float = opt(
        1024.0,
        "train only: MB of each cache's (latents, text embeddings) entries a process keeps in memory once read "
        "(least recently used dropped first; reading an npz costs about as much as a tiny model's step); 0 reads "
        "every sample from disk",
    )
    crop: tuple[int, int] | None = opt(
        None,
        "tae-train only: train video micro-batches on random (height, width) crops of the `size` clips, the same "
        "window for all frames of a clip (the TAE is convolutional: a fraction of the compute per step; images "
        "train whole; evaluate at full size)",
    )

    def check(self) -> None:
        need(all(v >= 1 for v in self.size), "data.size", self.size, "height and width must be positive")
        need(self.frames >= 1, "data.frames", self.frames, "must be at least 1 (1 = images)")
        need(
            all(f >= 2 and b >= 1 for f, b in self.durations.items()),
            "data.durations",
            self.durations,
            "frame counts must be >= 2 (images come from image buckets) and batch sizes >= 1",
        )
        need(self.stride >= 1, "data.stride", self.stride, "must be at least 1")
        need(
            0 <= self.max_substituted_fraction <= 1,
            "data.max_substituted_fraction",
            self.max_substituted_fraction,
            "must be in [0, 1]",
        )
        need(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be at least 1")
        need(
            self.image_batch_size is None or self.image_batch_size >= 1,
            "data.image_batch_size",
            self.image_batch_size,
            "must be at least 1 (or null)",
        )
        need(_in_unit(self.image_ratio), "data.image_ratio", self.image_ratio, "must be in [0, 1) (or null)")
        need(bool(self.aspect_ratios), "data.aspect_ratios", self.aspect_ratios, "needs at least one ratio")
        need(
            self.cache_memory_mb >= 0,
            "data.cache_memory_mb",
            self.cache_memory_mb,
            "must be >= 0 (0 keeps nothing)",
        )
        need(
            self.crop is None or all(c >= 1 for c in self.crop),
            "data.crop",
            self.crop,
            "height and width must be positive",
        )

    def video_buckets(self) -> dict[int, int]:
        """Frames -> batch size of the video buckets: `durations`, or `frames` x `batch_size`."""
        return dict(sorted(self.durations.items())) if self.durations else {self.frames: self.batch_size}

    def check_validation(self, run: RunConfig) -> None:
        """`train.val_every` needs held-out data."""
        if run.val_every > 0 and not self.val_manifest:
            raise ConfigError(f"train.val_every={run.val_every} needs data.val_manifest (held-out data)")


# -- TAE ------------------------------------------------------------------------------------------------------------


@dataclass
class TAEModelConfig:
    preset: Literal["tiny", "sd35"] = opt(
        "tiny", "TAEConfig preset: tiny (CPU, tests) or sd35 (SD3.5 VAE size)"
    )
    pretrained: str | None = opt(
        None,
        "TAE checkpoint folder to start from (e.g. from `mg-tae inflate`); its config.json replaces the preset",
    )
    overrides: dict[str, Any] = opt(
        {}, "TAEConfig fields to change, e.g. {latent_channels: 8} (with pretrained: must keep every shape)"
    )


@dataclass
class TAELossConfig:
    kl_weight: float = opt(
        1e-6,
        "weight of the KL term; the KL (summed over latent elements) is divided by the number of pixel values, "
        "so 1e-6 balances L1 as in the reference recipe (which sums L1 per frame)",
    )
    mse_weight: float = opt(
        0.0,
        "weight of a mean squared error added to L1 (0: off). L1 pulls as hard on a texture's small errors as on "
        "a shape's wrong colour; the squared term pulls on large errors first (the quickstart's tiny TAE learns "
        "colours with it)",
    )
    perceptual_weight: float = opt(0.0, "weight of the per-frame LPIPS (needs lpips_weights)")
    lpips_weights: str | None = opt(None, "LPIPS VGG16 weights as safetensors (see mg-tae's README)")
    opl_weight: float = opt(
        0.0, "weight of Movie Gen's outlier penalty on the sampled latent z (0: off; see opl_form)"
    )
    opl_r: float = opt(3.0, "outlier penalty margin r (in standard deviations)")
    opl_form: Literal["reference", "paper"] = opt(
        "reference",
        "reference: mean over latent elements of max(|z - mu| - r sigma, 0), mu/sigma per channel and latent frame "
        "over space (mindone's code); paper: mean over positions of max(||z_ij - mean|| - r std, 0), the L2 norm "
        "over a position's T x C values, mean/std over the sample (Movie Gen paper's formula)",
    )
    sample_posterior: bool = opt(True, "decode z = mean + std * noise (True) or the mean")

    def check(self) -> None:
        for key in ("kl_weight", "mse_weight", "perceptual_weight", "opl_weight"):
            need(getattr(self, key) >= 0, f"loss.{key}", getattr(self, key), "must be >= 0")
        need(self.opl_r > 0, "loss.opl_r", self.opl_r, "must be > 0")


@dataclass
class TAETrainConfig:
    model: TAEModelConfig = section(TAEModelConfig, "the autoencoder")
    loss: TAELossConfig = section(TAELossConfig, "the reconstruction objective")
    data: DataConfig = section(DataConfig, "training data")
    optim: OptimConfig = section(OptimConfig, "optimizer and schedule")
    train: RunConfig = section(RunConfig, "the run")
    calibrate_latents: int = opt(
        0,
        "after training, set the TAE's shift/scaling factors to the mean and 1/std of the posterior means of this "
        "many training clips, so diffusion sees unit-variance latents (for a TAE trained from scratch; 0: keep)",
    )

    def check(self) -> None:
        for part in (self.loss, self.data, self.optim, self.train):
            part.check()
        self.data.check_validation(self.train)
        need(
            self.calibrate_latents >= 0, "calibrate_latents", self.calibrate_latents, "must be >= 0 (0: keep)"
        )


@dataclass
class TAEEvalConfig:
    checkpoint: str = opt("", "TAE folder (save_pretrained) or run directory (uses its final model)")
    manifest: str = opt("", "CSV manifest of the clips to evaluate")
    root: str | None = opt(None, "folder the manifest's paths are relative to")
    frames: int = opt(16, "frames per clip")
    size: tuple[int, int] = opt((64, 64), "evaluation resolution (height, width)")
    limit: int | None = opt(None, "evaluate only the first N clips")
    lpips_weights: str | None = opt(
        None, "LPIPS VGG16 weights as safetensors; without them LPIPS is not reported"
    )
    output_dir: str = opt("runs/tae_eval", "where metrics.json and the side-by-side videos go")
    save_videos: int = opt(8, "write side-by-side input|reconstruction mp4s for the first N clips")
    tiling: bool = opt(False, "encode/decode with temporal tiling")
    fps: float = opt(8.0, "frame rate of the saved videos")
    quantize: bool = opt(
        True,
        "score 8-bit frames (round to 0..255 first, as the reference evaluation does); false: float frames",
    )


@dataclass
class CacheLatentsConfig:
    checkpoint: str = opt("", "TAE folder or TAE run directory")
    manifest: str = opt("", "CSV manifest of the clips to encode")
    root: str | None = opt(None, "folder the manifest's paths are relative to")
    output_dir: str = opt("", "latent cache folder (docs/contracts.md section 3)")
    frames: int = opt(16, "frames per clip")
    size: tuple[int, int] = opt((64, 64), "resolution (height, width)")
    batch_size: int = opt(4, "clips per encode call")
    tiling: bool = opt(False, "encode with temporal tiling (long clips)")


# -- text -----------------------------------------------------------------------------------------------------------


@dataclass
class TextConfig:
    encoders: dict[str, str] = opt(
        {"ul2": "tiny", "byt5": "tiny", "metaclip": "tiny"},
        "encoder name -> Hugging Face folder or preset ('tiny', 'small'); any subset of ul2, byt5, metaclip",
    )
    seed: int = opt(0, "seed of the random-initialised presets")
    max_lengths: dict[str, int] = opt(
        {}, "token limit per encoder (default: UL2 512, ByT5 100, MetaCLIP 256)"
    )


@dataclass
class CacheTextConfig:
    manifest: str = opt("", "CSV manifest whose captions are embedded (keys follow its `video` column)")
    output_dir: str = opt("", "text-embedding cache folder (docs/contracts.md section 2)")
    text: TextConfig = section(TextConfig, "text encoders")
    batch_size: int = opt(16, "prompts per encoder call")
    dtype: Literal["float32", "float16"] = opt("float32", "storage type of the embeddings")


# -- transformer ------------------------------------------------------------------------------------------------------


@dataclass
class TransformerModelConfig:
    preset: Literal["tiny", "1B", "5B", "30B"] = opt("tiny", "transformer size")
    overrides: dict[str, Any] = opt(
        {}, "TransformerConfig fields to change, e.g. {num_layers: 4, hidden_size: 128}"
    )
    init_from: str | None = opt(
        None,
        "transformer folder or run directory to start from (e.g. the previous stage); tables are resized",
    )


@dataclass
class ReferenceConfig:
    """Personalised Movie Gen (PT2V): a reference image per clip, encoded by a vision tower whose projected
    tokens go in front of the text (mg_transformer.personalized)."""

    vision: str | None = opt(
        None,
        "PT2V's vision encoder: a Hugging Face CLIP (vision) folder, or 'tiny' (random, for CPU recipes); null: "
        "text-to-video, unless model.init_from is a PT2V model (whose encoder is then used)",
    )
    columns: list[str] = opt(
        ["reference"],
        "manifest columns holding the reference images, one picked per sample (PT2V stage 3: cross_reference)",
    )
    train_vision: bool = opt(False, "train the vision encoder too (PT2V stage 3); stages 1-2 keep it frozen")
    vision_lr_scale: float = opt(
        1.0,
        "with train_vision: the vision encoder's LR as a share of optim.lr (e.g. 0.1: nudged, not retrained)",
    )
    dropout: float = opt(
        0.1, "probability of training a sample without its reference (kept a T2V model; CFG drops it)"
    )
    seed: int = opt(0, "seed of the 'tiny' vision encoder and of the new reference projection")

    def check(self) -> None:
        need(0.0 <= self.dropout <= 1.0, "reference.dropout", self.dropout, "must be in [0, 1]")
        need(self.vision_lr_scale > 0, "reference.vision_lr_scale", self.vision_lr_scale, "must be > 0")
        need(bool(self.columns), "reference.columns", self.columns, "name at least one manifest column")


@dataclass
class EditingConfig:
    """Movie Gen Edit: the input video's latent as a channel-concatenated condition and a learned embedding per
    editing task (mg_transformer.editing); the manifest's caption is the instruction."""

    tasks: list[str] = opt(
        [],
        "editing tasks the model learns (e.g. [recolor, mark, remove, background]; 'none' is added first); "
        "empty: not an edit run, unless model.init_from is an edit model (whose tasks are then used)",
    )
    source_column: str = opt("source", "manifest column of the input (source) video of each edit")
    task_column: str = opt("task", "manifest column naming each example's editing task")
    task_tokens: int = opt(4, "context tokens each task embedding is mapped to")
    seed: int = opt(0, "seed of the new task embeddings and their linear layers")

    def check(self) -> None:
        need(self.task_tokens >= 1, "editing.task_tokens", self.task_tokens, "must be >= 1")
        need(
            len(set(self.tasks)) == len(self.tasks) and "none" not in self.tasks,
            "editing.tasks",
            self.tasks,
            "distinct task names ('none' is implied)",
        )


@dataclass
class FlowConfig:
    timestep_sampling: Literal["logit-normal", "uniform"] = opt(
        "logit-normal", "training-time distribution of t"
    )
    logit_mean: float = opt(0.0, "mean of the logit-normal")
    logit_std: float = opt(1.0, "standard deviation of the logit-normal")
    text_dropout: float = opt(0.1, "probability of replacing a caption by the empty prompt (for CFG)")
    sigma_min: float = opt(1e-5, "sigma_min of the rectified-flow interpolation")
    val_timesteps: int = opt(
        10, "validation loss: mean over these many fixed t = linspace(0, 1, n + 2)[1:-1], fixed noise"
    )

    def check(self) -> None:
        need(0.0 <= self.text_dropout <= 1.0, "flow.text_dropout", self.text_dropout, "must be in [0, 1]")
        need(self.logit_std > 0, "flow.logit_std", self.logit_std, "must be > 0")
        need(0.0 <= self.sigma_min < 1.0, "flow.sigma_min", self.sigma_min, "must be in [0, 1)")
        need(self.val_timesteps >= 1, "flow.val_timesteps", self.val_timesteps, "must be >= 1")


@dataclass
class ParallelConfig:
    dp: int | None = opt(None, "data-parallel degree (null: what the world size leaves after tp x cp x sp)")
    tp: int = opt(1, "tensor-parallel degree (Megatron: attention heads and MLP split over tp ranks)")
    cp: int = opt(1, "context-parallel degree (self-attention K/V all-gathered over cp ranks)")
    sp: int = opt(1, "Ulysses sequence-parallel degree (heads must divide by tp x sp)")
    zero_stage: Literal[0, 1, 2, 3] = opt(
        0, "ZeRO stage of the optimizer (shards over each parameter's replicas)"
    )
    tp_sequence_parallel: bool = opt(
        True,
        "with tp > 1, split the activations between tensor-parallel layers along the sequence too (Megatron-SP: "
        "1/tp of the norm/residual memory at the same communication volume)",
    )

    def check(self) -> None:
        for axis in ("tp", "cp", "sp"):
            need(getattr(self, axis) >= 1, f"parallel.{axis}", getattr(self, axis), "must be >= 1")
        need(self.dp is None or self.dp >= 1, "parallel.dp", self.dp, "must be >= 1 (or null: inferred)")

    def degrees(self, world_size: int) -> dict[str, int]:
        """{dp, cp, sp, tp} for a job of `world_size` processes; raises ConfigError naming the fields and the
        numbers when they do not multiply to it."""
        model = self.tp * self.cp * self.sp
        named = f"parallel.tp={self.tp} x parallel.cp={self.cp} x parallel.sp={self.sp}"
        hint = " (launch it under msrun with that many processes)" if world_size == 1 else ""
        if self.dp is None:
            if world_size % model:
                raise ConfigError(
                    f"{named} = {model} must divide the world size; this job has {world_size} process(es){hint}"
                )
            dp = world_size // model
        elif self.dp * model != world_size:
            raise ConfigError(
                f"parallel.dp={self.dp} x {named} = {self.dp * model} processes, but this job has {world_size}{hint}"
            )
        else:
            dp = self.dp
        return {"dp": dp, "cp": self.cp, "sp": self.sp, "tp": self.tp}


@dataclass
class TransformerTrainConfig:
    model: TransformerModelConfig = section(TransformerModelConfig, "the transformer")
    tae: str | None = opt(
        None, "TAE folder or run directory (needed unless latent_cache is set; also names the pipeline's TAE)"
    )
    tae_tiling: bool = opt(
        False, "encode pixels with the TAE's temporal and spatial tiling (long or large clips)"
    )
    text: TextConfig = section(TextConfig, "text encoders (used unless data.text_cache is set)")
    latent_cache: str | None = opt(
        None, "latent cache folder (from `mg-train cache-latents`); null: encode pixels"
    )
    text_cache: str | None = opt(
        None, "text-embedding cache folder (from `mg-train cache-text`); null: embed online"
    )
    val_latent_cache: str | None = opt(
        None, "latent cache of the validation manifest (default: latent_cache)"
    )
    flow: FlowConfig = section(FlowConfig, "rectified-flow objective")
    data: DataConfig = section(DataConfig, "training data")
    optim: OptimConfig = section(OptimConfig, "optimizer and schedule")
    train: RunConfig = section(RunConfig, "the run")
    parallel: ParallelConfig = section(ParallelConfig, "distributed training (under msrun)")
    reference: ReferenceConfig = section(ReferenceConfig, "personalisation (PT2V): reference images")
    editing: EditingConfig = section(EditingConfig, "Movie Gen Edit: input videos and editing tasks")
    fps: float | None = opt(
        None, "frame rate recorded in the pipeline for sampling (default: the training clips' rate)"
    )

    def check(self) -> None:
        for part in (
            self.flow,
            self.data,
            self.optim,
            self.train,
            self.parallel,
            self.reference,
            self.editing,
        ):
            part.check()
        need(
            not (self.editing.tasks and self.reference.vision),
            "editing.tasks",
            self.editing.tasks,
            "an edit run cannot also be a PT2V run (reference.vision is set)",
        )
        self.data.check_validation(self.train)
        need(
            self.data.crop is None,
            "data.crop",
            self.data.crop,
            "crops are for tae-train only; remove data.crop",
        )
        need(self.fps is None or self.fps > 0, "fps", self.fps, "must be > 0 (or null)")


@dataclass
class ClusterConfig:
    cards: int = opt(8, "cards (ranks) of the job")
    card_memory: str = opt("64GB", "memory per card, e.g. 64GB, 32GiB, 65536MB")
    card_tflops: float = opt(
        313.0,
        "peak dense TFLOP/s of a card at the compute precision (assumed: Ascend 910B, fp16/bf16 ~313)",
    )
    cards_per_node: int = opt(8, "cards per node (groups spanning nodes use node_bandwidth)")
    link_bandwidth: float = opt(56.0, "GB/s a card reaches in a collective inside a node (assumed: HCCS)")
    node_bandwidth: float = opt(
        25.0, "GB/s a card reaches in a collective across nodes (assumed: 200 Gb/s RoCE)"
    )
    reserve: float = opt(
        0.1, "share of a card's memory kept for the framework, kernels' workspace, fragments"
    )

    def memory_bytes(self) -> float:
        text = self.card_memory.strip().upper().replace(" ", "")
        units = {"TIB": 2**40, "GIB": 2**30, "MIB": 2**20, "TB": 1e12, "GB": 1e9, "MB": 1e6}
        for unit, factor in units.items():
            if text.endswith(unit):
                try:
                    return float(text[: -len(unit)]) * factor
                except ValueError:
                    break
        raise ConfigError(
            f"cluster.card_memory={self.card_memory!r}: expected a number with a unit, e.g. 64GB or 32GiB"
        )

    def check(self) -> None:
        need(self.cards >= 1, "cluster.cards", self.cards, "must be >= 1")
        need(self.memory_bytes() > 0, "cluster.card_memory", self.card_memory, "must be > 0")
        for key in ("card_tflops", "link_bandwidth", "node_bandwidth"):
            need(getattr(self, key) > 0, f"cluster.{key}", getattr(self, key), "must be > 0")
        need(self.cards_per_node >= 1, "cluster.cards_per_node", self.cards_per_node, "must be >= 1")
        need(0 <= self.reserve < 1, "cluster.reserve", self.reserve, "must be in [0, 1)")


@dataclass
class PlanOptions:
    state: Literal["fp32", "bf16"] = opt(
        "fp32",
        "model state: fp32 = mg-train's fp32 weights, gradients and AdamW moments (bf16 compute on Ascend); "
        "bf16 = everything in bf16, as the reference implementation trains",
    )
    activations: Literal["bf16", "fp32"] = opt("bf16", "activation precision (bf16 on Ascend, fp32 on CPU)")
    stages: list[int] = opt([0, 1, 2, 3], "ZeRO stages to consider")
    recompute: list[bool] = opt([False, True], "gradient checkpointing settings to consider")
    tp_sequence_parallel: bool = opt(True, "the sequence-parallel variant of tensor parallelism")
    compression: tuple[int, int] = opt((8, 8), "the TAE's (temporal, spatial) compression")
    top: int = opt(10, "layouts to print (the fastest that fit, then the closest that do not)")

    def check(self) -> None:
        need(all(s in (0, 1, 2, 3) for s in self.stages) and self.stages, "plan.stages", self.stages, "0-3")
        need(bool(self.recompute), "plan.recompute", self.recompute, "needs at least one setting")
        need(all(c >= 1 for c in self.compression), "plan.compression", self.compression, "must be >= 1")
        need(self.top >= 1, "plan.top", self.top, "must be >= 1")


@dataclass
class PlanConfig(TransformerTrainConfig):
    """A training config plus the cluster to plan it for; only the model, data shapes, text lengths, optimizer
    (EMA, gradient accumulation) and parallel options are read."""

    cluster: ClusterConfig = section(ClusterConfig, "the cards and links to plan for")
    plan: PlanOptions = section(PlanOptions, "what the planner considers")

    def check(self) -> None:
        for part in (self.data, self.optim, self.parallel, self.cluster, self.plan):
            part.check()


# -- export ---------------------------------------------------------------------------------------------------------


@dataclass
class ExportConfig:
    checkpoint: str = opt(
        "", "checkpoint folder (checkpoints/step_*) or run directory (its latest checkpoint)"
    )
    output_dir: str = opt("", "model folder to write (config.json + model.safetensors)")
    weights: Literal["ema", "raw"] = opt(
        "ema", "ema: the EMA weights when the checkpoint has them; raw: the trained ones"
    )

    def check(self) -> None:
        need(bool(self.checkpoint), "checkpoint", self.checkpoint, "name a checkpoint or run directory")
        need(bool(self.output_dir), "output_dir", self.output_dir, "name the model folder to write")


# -- sampling ---------------------------------------------------------------------------------------------------------


@dataclass
class SampleConfig:
    checkpoint: str = opt("", "pipeline folder (a run's `pipeline/`) or run directory")
    prompts: list[str] = opt([], "prompts to generate")
    prompts_file: str | None = opt(
        None, "text file with one prompt per line (or a CSV with a `caption` column)"
    )
    negative_prompt: str | None = opt(None, "prompt to steer away from (replaces the empty prompt in CFG)")
    steps: int = opt(50, "Euler steps of the linear-quadratic schedule")
    cfg_scale: float = opt(7.5, "classifier-free guidance scale (1: off)")
    seed: int = opt(0, "seed of the first sample; sample i uses seed + i")
    frames: int | None = opt(None, "frames per video (1: image); default: the pipeline's training frames")
    size: tuple[int, int] | None = opt(None, "(height, width); default: the pipeline's training size")
    fps: float | None = opt(None, "frame rate of the written mp4s; default: the pipeline's")
    batch_size: int = opt(4, "prompts sampled together")
    output_dir: str = opt("samples", "where the mp4 (video) or png (image) files go")
    reference: str | None = opt(
        None,
        "reference image (png/jpg) of the subject, for a personalised (PT2V) pipeline; every prompt uses it",
    )


@dataclass
class EditCommandConfig:
    checkpoint: str = opt(
        "", "pipeline folder of a Movie Gen Edit run (its `pipeline/`) or the run directory"
    )
    video: str = opt("", "the input video (mp4, or an image for a one-frame edit)")
    instruction: str = opt("", 'what to change, e.g. "make the red circle blue"')
    task: str = opt("", "the editing task the instruction belongs to (one of the model's, e.g. recolor)")
    steps: int = opt(50, "Euler steps of the linear-quadratic schedule")
    cfg_scale: float = opt(7.5, "classifier-free guidance scale (instruction against the empty one; 1: off)")
    seed: int = opt(0, "seed of the start noise")
    output: str = opt("edited.mp4", "the edited video (.mp4, or .png for a one-frame input)")
    fps: float | None = opt(None, "frame rate of the written mp4; default: the input's")

    def check(self) -> None:
        for key in ("checkpoint", "video", "instruction", "task"):
            need(bool(getattr(self, key)), key, getattr(self, key), "must be given")
        need(self.steps >= 2, "steps", self.steps, "must be at least 2")


@dataclass
class BacktranslateConfig:
    checkpoint: str = opt(
        "", "the stage-II Movie Gen Edit pipeline (a run's `pipeline/`) or its run directory"
    )
    manifest: str = opt(
        "", "clips to edit, with ground-truth columns color and shape (mg-data's synthetic sets)"
    )
    root: str | None = opt(None, "folder the manifest's paths are relative to (default: the manifest's)")
    output_dir: str = opt("", "where sources/, targets/, train.csv and all.csv go")
    tasks: list[str] = opt(["recolor", "mark"], "forward edits, cycled over the clips (recolor, mark)")
    limit: int | None = opt(None, "backtranslate only the first N clips")
    steps: int = opt(30, "sampling steps of each edit")
    cfg_scale: float = opt(5.0, "guidance scale of each edit")
    seed: int = opt(0, "seed of the target colours and of the edits' noise (clip i: seed + i)")
    jit: bool = opt(True, "compile the denoiser with mindspore.jit (false: eager, quicker for a clip or two)")

    def check(self) -> None:
        for key in ("checkpoint", "manifest", "output_dir"):
            need(bool(getattr(self, key)), key, getattr(self, key), "must be given")
        need(bool(self.tasks), "tasks", self.tasks, "name at least one forward edit")
        need(self.steps >= 2, "steps", self.steps, "must be at least 2")


# -- quickstart ------------------------------------------------------------------------------------------------------


@dataclass
class QuickstartConfig:
    output_dir: str = opt("runs/quickstart", "everything the quickstart writes goes here")
    task: Literal["t2v", "pt2v", "edit"] = opt(
        "t2v",
        "t2v: text-to-video; pt2v: personalised video (a T2V model, then PT2V stages 1 and 3 on references, "
        "checked on held-out subjects against the T2V model); edit: Movie Gen Edit (a T2V model, then edit "
        "stages I-III, each checked on held-out clips)",
    )
    num_clips: int = opt(240, "synthetic training+validation clips")
    size: int = opt(64, "clip height and width")
    frames: int = opt(16, "frames per clip")
    fps: float = opt(8.0, "frame rate of the synthetic clips")
    seed: int = opt(0, "seed of the data and both trainings")
    num_images: int = opt(
        240, "synthetic still images (png, 'a red circle') added to the TAE's training data (0: none)"
    )
    shape_size: tuple[float, float] = opt(
        (0.18, 0.24),
        "range of the shapes' radius as a share of the frame side (mg-data's default: 0.11-0.15)",
    )
    texture_contrast: float = opt(
        0.4, "scale of the background texture's contrast (mg-data's default 1; 0: flat backgrounds)"
    )
    travel: float = opt(
        0.6,
        "distance a shape moves over a clip, as a share of the free space (1: edge to edge)",
    )
    start_jitter: float = opt(
        0.0,
        "share of the room along the motion where a clip may start (0: at the edge behind the motion, so the "
        "direction word also fixes where the shape is in each frame; 1: anywhere the motion fits)",
    )
    tae_steps: int = opt(140, "TAE training steps")
    tae_batch_size: int = opt(2, "TAE batch size of video steps")
    tae_image_batch_size: int = opt(8, "TAE batch size of image steps")
    tae_image_ratio: float = opt(0.75, "share of TAE steps trained on still images (needs num_images > 0)")
    tae_crop: int | None = opt(
        32,
        "TAE video steps train on random square crops of this side (null: whole clips); images train whole, "
        "evaluation uses whole clips",
    )
    text_encoders: list[str] = opt(
        ["ul2", "metaclip"],
        "tiny random-initialised text encoders (any of ul2, byt5, metaclip); ul2 and metaclip read one token "
        "per word of the training captions' vocabulary, byt5 one per byte",
    )
    transformer_steps: int = opt(1300, "transformer training steps")
    transformer_lr: float = opt(
        3e-3, "peak learning rate of the transformer (50 warmup steps, cosine decay to a tenth of it)"
    )
    transformer_batch_size: int = opt(16, "transformer batch size")
    transformer: dict[str, Any] = opt(
        {"num_layers": 4, "hidden_size": 128, "ffn_size": 352, "num_heads": 4},
        "TransformerConfig overrides of the tiny preset",
    )
    sample_prompts: int = opt(
        48,
        "distinct captions to sample videos for, held-out ones first (48: every colour x shape x direction)",
    )
    sample_steps: int = opt(30, "sampling steps")
    cfg_scale: float = opt(5.0, "classifier-free guidance scale of the samples")
    jit: bool = opt(
        True,
        "compile every training step and the samplers' denoiser with mindspore.jit (false: run eagerly, which is "
        "quicker for toy runs of a few steps, where compiling costs more than it saves)",
    )
    holdout_subjects: list[str] = opt(
        ["red:triangle", "blue:circle"],
        "pt2v: COLOR:SHAPE subjects seen only in validation (their references are new to the model)",
    )
    pt2v_steps: int = opt(1200, "pt2v: stage-1 steps (paired references, frozen vision tower)")
    pt2v_cross_steps: int = opt(200, "pt2v: stage-3 steps (cross-paired references, vision tower trained)")
    pt2v_lr: float = opt(
        3e-3, "pt2v: peak learning rate of stage 1 (stage 3: a thirtieth of it, so the tower is only nudged)"
    )
    pt2v_vision_lr_scale: float = opt(
        0.01,
        "pt2v: the vision tower's share of stage 3's LR (the tiny random tower gains nothing from training here and "
        "each update moves the colour features stage 1 learnt to read: held-out colour 0.83 at 1, 0.92 at 0.1, "
        "0.96 at 0.01)",
    )
    pt2v_seeds: int = opt(6, "pt2v: samples per held-out subject and direction")
    edit_images: int = opt(480, "edit: image-edit pairs of stage I (one frame each)")
    edit_animated: int = opt(
        240, "edit: animated-frame pairs of stage II (an image pair under one camera motion)"
    )
    edit_marks: int = opt(
        60,
        "edit: stage II's instruction-guided segmentation: moving-shape clips with the named shape painted",
    )
    edit_backgrounds: int = opt(
        60,
        "edit: stage II's moving-shape clips with the background changed as told (the hardest task: the whole "
        "frame changes)",
    )
    edit_test: int = opt(
        24, "edit: held-out video edits of every task (rendered ground truth) that each stage is judged on"
    )
    edit_backtranslations: int = opt(48, "edit: T2V training clips the stage-II model edits for stage III")
    edit_steps: list[int] = opt([600, 2400, 300], "edit: steps of stages I, II and III")
    edit_lr: float = opt(3e-3, "edit: peak learning rate of stages I and II (stage III: a third of it)")
