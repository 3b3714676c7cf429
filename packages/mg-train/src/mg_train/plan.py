"""`mg-train plan`: which parallel layouts of a training config fit a cluster, and how fast each would step.

For every (dp, cp, sp, tp) the card count allows, every ZeRO stage and recompute setting of `plan.*`, and the
layout checks a run makes (heads, hidden and every bucket's tokens divisible), it prints per-rank memory
(parameters, gradients, optimizer state, EMA, activations, attention workspace, communication buffers), matmul
FLOPs and bytes per collective of one optimizer step, and an ideal step time: FLOPs at the card's peak plus the
ring time of the traffic on the links, with no overlap. Layouts that fit are ranked by that time. The numbers
come from `mg_train.planning` (the transformer) and `mg_parallel.planner` (ZeRO, styles, links); the model is
built lazily (no memory) from the config's preset and overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mg_data.buckets import Bucket
from mg_parallel import planner
from mg_parallel.planner import Cluster, Layout
from mg_train import planning
from mg_train.config.loader import ConfigError
from mg_train.config.schema import PlanConfig
from mg_train.parallel_plan import check_layout
from mg_train.transformer_train import latent_grid, training_buckets
from mg_transformer import TransformerConfig
from mg_transformer.text import DEFAULT_MAX_LENGTHS

TEXT_WIDTHS = {"ul2": 4096, "byt5": 1472, "metaclip": 1280}  # the real encoders' widths (Movie Gen's)
GIB = 2**30


@dataclass(frozen=True)
class Estimate:
    """What one layout costs on one rank for the plan's worst bucket."""

    layout: Layout
    state: planner.StateBytes
    activations: planning.ActivationBytes
    comm_buffers: int
    flops: float
    traffic: planner.Traffic
    compute_seconds: float
    wire_seconds: float

    @property
    def memory(self) -> int:
        return self.state.total + self.activations.total + self.comm_buffers

    samples: int = 0  # per optimizer step, all data-parallel ranks

    @property
    def step_seconds(self) -> float:
        return self.compute_seconds + self.wire_seconds

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.step_seconds


def model_config(cfg: PlanConfig) -> TransformerConfig:
    """The preset plus overrides (the shape `init_from` would have too, tables aside), with the real text
    encoders' widths for the encoders the config names."""
    overrides = dict(cfg.model.overrides)
    overrides.pop("text_dims", None)
    overrides.setdefault("in_channels", 16)
    overrides.setdefault("out_channels", overrides["in_channels"])
    dims = {name: TEXT_WIDTHS[name] for name in cfg.text.encoders if name in TEXT_WIDTHS}
    try:
        return TransformerConfig.preset(cfg.model.preset, text_dims=dims, **overrides)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None


def text_tokens(cfg: PlanConfig) -> int:
    """Text tokens per sample: `text.max_lengths` where set, else the encoders' defaults (UL2 512, ByT5 100,
    MetaCLIP 256)."""
    return sum(int(cfg.text.max_lengths.get(n, DEFAULT_MAX_LENGTHS.get(n, 0))) for n in cfg.text.encoders)


def workloads(cfg: PlanConfig, config: TransformerConfig) -> list[tuple[Bucket, planning.Workload]]:
    compression = tuple(int(c) for c in cfg.plan.compression)
    multiple = compression[1] * math.lcm(*config.patch_size[1:])
    buckets = training_buckets(cfg.data, multiple).buckets
    text = text_tokens(cfg)
    e = 2 if cfg.plan.activations == "bf16" else 4
    out = []
    for bucket in buckets:
        grid = latent_grid(config, bucket.num_frames, bucket.height, bucket.width, compression)
        out.append(
            (
                bucket,
                planning.Workload(
                    batch=bucket.batch_size,
                    tokens=math.prod(grid),
                    text_tokens=text,
                    micro_batches=cfg.optim.grad_accum,
                    activation_bytes=e,
                    name=bucket.name,
                ),
            )
        )
    return out


def comm_buffer_bytes(params: list[planner.ParamSpec], layout: Layout, compute_bytes: int) -> int:
    """Communication buffers: the fused gradient/chunk buckets (2 x 32 MB) of stages 0-2; under ZeRO-3 the
    gathered full weights in the compute precision, kept for the backward pass by every layer without
    recomputation (PyNative and graph mode save a matmul's inputs), one block's worth (twice: recomputed and
    used) with it."""
    if layout.zero_stage < 3:
        return int(2 * planner.DEFAULT_BUCKET_MB * 2**20) if layout.world > 1 else 0
    gathered = [p for p in params if planner.zero_sharded(p, layout)]
    if not layout.recompute:
        return sum(planner.local_numel(p, layout) * compute_bytes for p in gathered)
    per_block: dict[str, int] = {}
    for p in gathered:
        key = ".".join(p.name.split(".")[:2]) if p.name.startswith("blocks.") else "outside"
        per_block[key] = per_block.get(key, 0) + planner.local_numel(p, layout) * compute_bytes
    return 2 * max(per_block.values(), default=0)


def estimate(
    cfg: PlanConfig,
    config: TransformerConfig,
    params: list[planner.ParamSpec],
    layout: Layout,
    work: planning.Workload,
    cluster: Cluster,
) -> Estimate:
    tp_seq = cfg.parallel.tp_sequence_parallel and cfg.plan.tp_sequence_parallel
    state = planner.state_bytes(params, layout, ema=cfg.optim.ema_decay is not None)
    activations = planning.activation_bytes(config, layout, work, tp_seq)
    flops = planning.step_flops(config, layout, work, _patch_features(config), dict(config.text_dims))
    total_flops = sum(flops.values())
    traffic = planning.step_traffic(config, layout, work, params, tp_seq)
    return Estimate(
        layout=layout,
        state=state,
        activations=activations,
        comm_buffers=comm_buffer_bytes(params, layout, work.activation_bytes),
        flops=total_flops,
        traffic=traffic,
        compute_seconds=total_flops / cluster.card_flops,
        wire_seconds=planner.wire_seconds(traffic, layout, cluster),
        samples=work.batch * work.micro_batches * layout.dp,
    )


def worst(cfg, config, params, layout: Layout, loads, cluster: Cluster) -> Estimate:
    """The estimate of the bucket with the most activation memory (ties: the most tokens per step)."""
    tp_seq = cfg.parallel.tp_sequence_parallel and cfg.plan.tp_sequence_parallel
    _, work = max(
        loads,
        key=lambda bw: (
            planning.activation_bytes(config, layout, bw[1], tp_seq).total,
            bw[1].batch * bw[1].tokens,
        ),
    )
    return estimate(cfg, config, params, layout, work, cluster)


def _patch_features(config: TransformerConfig) -> int:
    return config.in_channels * math.prod(config.patch_size)


def valid(config: TransformerConfig, layout: Layout, tokens: list[int], tp_seq: bool) -> bool:
    degrees = {"dp": layout.dp, "cp": layout.cp, "sp": layout.sp, "tp": layout.tp}
    try:
        for count in tokens:
            check_layout(config, degrees, count, tp_seq)
    except ValueError:
        return False
    return True


def configured_layout(cfg: PlanConfig) -> Layout | None:
    """The layout the config itself asks for on `cluster.cards` (None when its degrees do not divide them)."""
    p = cfg.parallel
    model = p.tp * p.cp * p.sp
    if cfg.cluster.cards % model or (p.dp is not None and p.dp * model != cfg.cluster.cards):
        return None
    return Layout(
        dp=cfg.cluster.cards // model,
        cp=p.cp,
        sp=p.sp,
        tp=p.tp,
        zero_stage=p.zero_stage,
        recompute=cfg.train.gradient_checkpointing,
    )


def plan(cfg: PlanConfig) -> tuple[list[Estimate], dict]:
    """Every valid layout's estimate for the bucket that needs the most memory (per layout), sorted: layouts
    that fit by throughput (`data.batch_size` samples per data-parallel rank: layouts with fewer data-parallel
    ranks step on fewer samples), then the rest by memory."""
    cfg.check()
    config = model_config(cfg)
    itemsize = 2 if cfg.plan.state == "bf16" else 4
    params = planning.parameter_specs(config, itemsize)
    loads = workloads(cfg, config)
    tp_seq = cfg.parallel.tp_sequence_parallel and cfg.plan.tp_sequence_parallel
    cluster = Cluster(
        cards=cfg.cluster.cards,
        card_memory=cfg.cluster.memory_bytes(),
        card_flops=cfg.cluster.card_tflops * 1e12,
        cards_per_node=cfg.cluster.cards_per_node,
        link_bandwidth=cfg.cluster.link_bandwidth * 1e9,
        node_bandwidth=cfg.cluster.node_bandwidth * 1e9,
        reserve=cfg.cluster.reserve,
    )
    tokens = [w.tokens for _, w in loads]
    results = []
    for layout in planner.layouts(cfg.cluster.cards, cfg.plan.stages, cfg.plan.recompute):
        if not valid(config, layout, tokens, tp_seq):
            continue
        results.append(worst(cfg, config, params, layout, loads, cluster))
    info = {"configured": None}
    configured = configured_layout(cfg)
    if configured is not None and valid(config, configured, tokens, tp_seq):
        info["configured"] = worst(cfg, config, params, configured, loads, cluster)
    fits = sorted(
        (e for e in results if e.memory <= cluster.usable_memory), key=lambda e: -e.samples_per_second
    )
    rest = sorted((e for e in results if e.memory > cluster.usable_memory), key=lambda e: e.memory)
    info |= {
        "config": config,
        "parameters": sum(p.numel for p in params),
        "workloads": loads,
        "cluster": cluster,
        "fitting": len(fits),
    }
    return fits + rest, info


def _gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def describe(estimates: list[Estimate], info: dict, cfg: PlanConfig) -> str:
    config, cluster = info["config"], info["cluster"]
    lines = [
        f"model: {info['parameters'] / 1e9:.2f}B parameters ({config.num_layers} layers, hidden "
        f"{config.hidden_size}, ffn {config.ffn_size}, {config.num_heads} heads); state {cfg.plan.state}, "
        f"activations {cfg.plan.activations}, EMA {'on' if cfg.optim.ema_decay is not None else 'off'}",
        "buckets: "
        + "; ".join(
            f"{b.name or f'{b.num_frames}x{b.height}x{b.width}'} batch {w.batch} x {w.tokens} tokens"
            for b, w in info["workloads"]
        )
        + f"; {info['workloads'][0][1].text_tokens} text tokens; {cfg.optim.grad_accum} micro-batch(es) per step",
        f"cluster: {cluster.cards} cards x {_gib(cluster.card_memory)} GiB ({_gib(cluster.usable_memory)} usable), "
        f"{cluster.card_flops / 1e12:.0f} TFLOP/s, {cluster.cards_per_node} per node, links "
        f"{cluster.link_bandwidth / 1e9:.0f} / {cluster.node_bandwidth / 1e9:.0f} GB/s (inside / across nodes)",
        f"{info['fitting']} of {len(estimates)} valid layouts fit; per rank, GiB; step time = FLOPs at peak + "
        "ring time of the traffic, no overlap (an ideal: real steps are slower); ranked by samples/s",
        "",
        f"{'layout':<34}{'params':>7}{'grads':>7}{'optim':>7}{'ema':>6}{'act':>7}{'attn':>6}{'comm':>6}"
        f"{'total':>7}  {'fits':<4}{'TFLOP':>8}{'AR GB':>7}{'AG GB':>7}{'RS GB':>7}{'A2A GB':>7}"
        f"{'compute s':>10}{'comm s':>8}{'step s':>8}{'samples/s':>10}",
    ]

    def row(e: Estimate) -> str:
        s, a, b = e.state, e.activations, e.traffic.bytes
        fits = "yes" if e.memory <= cluster.usable_memory else "no"
        return (
            f"{e.layout.describe():<34}{_gib(s.params):>7}{_gib(s.grads):>7}"
            f"{_gib(s.optimizer_state + s.shard_copies):>7}{_gib(s.ema):>6}"
            f"{_gib(a.blocks + a.outside):>7}{_gib(a.attention_workspace):>6}{_gib(e.comm_buffers):>6}"
            f"{_gib(e.memory):>7}  {fits:<4}{e.flops / 1e12:>8.0f}"
            f"{b['all_reduce'] / 1e9:>7.2f}{b['all_gather'] / 1e9:>7.2f}{b['reduce_scatter'] / 1e9:>7.2f}"
            f"{b['all_to_all'] / 1e9:>7.2f}{e.compute_seconds:>10.2f}{e.wire_seconds:>8.2f}{e.step_seconds:>8.2f}"
            f"{e.samples_per_second:>10.1f}"
        )

    configured = info["configured"]
    if configured is not None:
        lines += [row(configured) + "   <- the config's layout", ""]
    else:
        p = cfg.parallel
        lines += [
            f"(the config's layout tp{p.tp} x cp{p.cp} x sp{p.sp} does not fit {cluster.cards} cards or the layout "
            "checks)",
            "",
        ]
    lines += [row(e) for e in estimates[: cfg.plan.top]]
    return "\n".join(lines)


def run(cfg: PlanConfig) -> list[Estimate]:
    estimates, info = plan(cfg)
    if not estimates:
        raise ConfigError(
            f"no layout of {cfg.cluster.cards} cards passes the layout checks for this model and these buckets "
            "(heads, hidden and token counts must divide by the degrees)"
        )
    print(describe(estimates, info, cfg), flush=True)
    return estimates
