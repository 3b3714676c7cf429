"""Run every package's benchmarks and print one summary table, with a description of the machine.

    python tools/bench_summary.py                      # every benchmark, quick arguments
    python tools/bench_summary.py --only mg-tae attention --json bench.json
    python tools/bench_summary.py --full               # each script's own defaults (much longer)
    python tools/bench_summary.py --list

Each benchmark runs in its own subprocess (this interpreter, its bin folder first on PATH so that msrun and the
literal `python` it starts are this environment's), one at a time, in a scratch working directory, with a
timeout. A benchmark reports its figures by printing lines `MG-BENCH <json>` (the convention is in
tools/README.md); the table shows them side by side. A benchmark that fails, times out or prints no figure is
reported with the end of its stderr and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "MG-BENCH "


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str  # "<package>/<script stem>", the name the script prints in its MG-BENCH lines
    script: str  # path from the repository root (or absolute)
    quick: tuple[str, ...] = ()  # arguments of the default run; --full runs the script without them
    what: str = ""  # what it measures, one line

    def command(self, full: bool = False) -> list[str]:
        return [sys.executable, str(ROOT / self.script), *(() if full else self.quick)]


REGISTRY = (
    Benchmark(
        "mg-data/bench_loader",
        "packages/mg-data/benchmarks/bench_loader.py",
        ("--n", "8", "--rounds", "3"),
        "VideoDataset frames/s vs raw decord on the same frames; cached latents vs decoding",
    ),
    Benchmark(
        "mg-demo/queue_overhead",
        "packages/mg-demo/benchmarks/queue_overhead.py",
        ("--requests", "3", "--steps", "5"),
        "a generation through the web app (HTTP, Gradio queue) vs calling the generator directly",
    ),
    Benchmark(
        "mg-parallel/collectives",
        "packages/mg-parallel/benchmarks/collectives.py",
        ("--sizes-mib", "1", "--repeats", "3"),
        "AllReduce-based collectives vs native ones, 2 ranks under msrun",
    ),
    Benchmark(
        "mg-parallel/zero_memory",
        "packages/mg-parallel/benchmarks/zero_memory.py",
        ("--ranks", "1", "2"),
        "bytes per rank held by ZeRO stages 0-3 on N ranks vs one rank (msrun)",
    ),
    Benchmark(
        "mg-parallel/zero_backward_peak",
        "packages/mg-parallel/benchmarks/zero_backward_peak.py",
        ("--dim", "256", "--hidden", "1024", "--depth", "4", "--ranks", "1", "2"),
        "per-rank peak during forward + backward under ZeRO stages 0/2/3 on N ranks vs one rank (msrun)",
    ),
    Benchmark(
        "mg-tae/bench_cpu",
        "packages/mg-tae/benchmarks/bench_cpu.py",
        ("--quick",),
        "TAE conv GFLOP/s vs MindSpore's convs, full TAE time and memory, tiled decode memory and PSNR",
    ),
    Benchmark(
        "mg-tae/bench_train_step",
        "packages/mg-tae/benchmarks/bench_train_step.py",
        ("--reps", "3"),
        "tiny TAE train step: hand-written conv backward vs MindSpore autograd",
    ),
    Benchmark(
        "mg-tae/bench_vs_diffusers",
        "packages/mg-tae/benchmarks/bench_vs_diffusers.py",
        ("--sizes", "8x32", "--no-convs"),
        "SD3.5-sized TAE encode+decode time and peak memory vs diffusers' AutoencoderKL on PyTorch; conv rates",
    ),
    Benchmark(
        "mg-transformer/bench_attention",
        "packages/mg-transformer/benchmarks/bench_attention.py",
        ("--seqs", "4096"),
        "chunked online-softmax attention vs plain attention: time and peak memory",
    ),
    Benchmark(
        "mg-transformer/bench_text_encoders",
        "packages/mg-transformer/benchmarks/bench_text_encoders.py",
        ("--sizes", "tiny", "--repeats", "2"),
        "text-encoder prompts/s, synchronous op launch (what mg-train sets) vs MindSpore's async default",
    ),
    Benchmark(
        "mg-transformer/bench_train_step",
        "packages/mg-transformer/benchmarks/bench_train_step.py",
        ("--layers", "2", "--latent", "4", "32", "32", "--steps", "2"),
        "transformer train-step FLOP/s vs the 2048^3 matmul rate; graph vs PyNative; oneDNN AVX2 vs default",
    ),
    Benchmark(
        "mg-train/bench_loop_memory",
        "packages/mg-train/benchmarks/bench_loop_memory.py",
        ("--layers", "2", "--hidden", "256", "--ffn", "704", "--heads", "4", "--steps", "2"),
        "peak host memory of mg-train's training loop vs a plain value_and_grad + AdamWeightDecay loop",
    ),
    Benchmark(
        "mg-train/bench_sampling",
        "packages/mg-train/benchmarks/bench_sampling.py",
        ("--prompts", "1", "--steps", "2"),
        "sampling the quickstart's pipeline (8 prompts x 50 steps): compiled vs eager, per stage",
    ),
    Benchmark(
        "mg-train/bench_memory_ranks",
        "packages/mg-train/benchmarks/bench_memory_ranks.py",
        (
            "--layers",
            "2",
            "--hidden",
            "256",
            "--ffn",
            "704",
            "--heads",
            "4",
            "--layouts",
            "single,dp2_zero3",
            "--recompute",
        ),
        "per-rank host memory of mg-train train (init, step, save) at 1, 2, 4 ranks with ZeRO-3 and TP vs 1/N",
    ),
    Benchmark(
        "mg-train/bench_plan_memory",
        "packages/mg-train/benchmarks/bench_plan_memory.py",
        ("--cases", "single,single_ckpt"),
        "the planner's activation memory vs the measured peak rise between two batch sizes",
    ),
    Benchmark(
        "mg-train/bench_train_step",
        "packages/mg-train/benchmarks/bench_train_step.py",
        ("--repeats", "2", "--only", "tiny,quickstart"),
        "the training loop's transformer step, mindspore.jit vs PyNative",
    ),
)


# ---------------------------------------------------------------------------------------------- MG-BENCH lines


@dataclasses.dataclass(frozen=True)
class Row:
    benchmark: str
    figure: str
    ours: float
    reference: float | None
    reference_name: str | None
    unit: str
    better: str  # "lower" or "higher"

    @property
    def ratio(self) -> float | None:
        """> 1 means ours is better: ours/reference when higher is better, reference/ours when lower is."""
        if self.reference is None:
            return None
        num, den = (self.ours, self.reference) if self.better == "higher" else (self.reference, self.ours)
        if den == 0 or math.isnan(num) or math.isnan(den):
            return None
        return num / den

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


def _number(value, field: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number{' or null' if optional else ''}, got {value!r}")
    return float(value)


def parse_lines(text: str) -> tuple[list[Row], list[str]]:
    """The rows of every `MG-BENCH <json>` line in `text`, and one message per malformed line or row."""
    rows, errors = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(PREFIX):
            continue
        try:
            group = json.loads(line[len(PREFIX) :])
            benchmark = str(group["benchmark"])
            entries = group["rows"]
            if not isinstance(entries, list):
                raise ValueError("rows must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(f"bad MG-BENCH line ({exc}): {line[:200]}")
            continue
        for entry in entries:
            try:
                better = entry.get("better")
                if better not in ("lower", "higher"):
                    raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
                reference = _number(entry.get("reference"), "reference", optional=True)
                rows.append(
                    Row(
                        benchmark=benchmark,
                        figure=str(entry["figure"]),
                        ours=_number(entry.get("ours"), "ours"),
                        reference=reference,
                        reference_name=None if reference is None else entry.get("reference_name"),
                        unit=str(entry.get("unit") or ""),
                        better=better,
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                errors.append(f"bad MG-BENCH row in {benchmark} ({exc}): {json.dumps(entry)[:200]}")
    return rows, errors


# ------------------------------------------------------------------------------------------------------ machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_model() -> str:
    """Model name, family/model numbers, the SIMD extensions oneDNN cares about, and whether it is a VM."""
    info: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() and key.strip() not in info:
            info[key.strip()] = value.strip()
    name = info.get("model name")
    if not name:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            name = next(
                (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")), ""
            )
    name = name or platform.processor() or "unknown CPU"
    if "cpu family" in info:
        name += f" (family {info['cpu family']} model {info.get('model', '?')})"
    flags = info.get("flags", "").split()
    if flags:
        name += ", " + " ".join(f for f in SIMD_FLAGS if f in flags)
        name += ", virtual machine" if "hypervisor" in flags else ""
    return name


def _meminfo_gib(key: str) -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        return (commit + (" (with local changes)" if dirty else "")) or None
    return None


def describe_machine() -> dict:
    """CPU, cores, memory, OS, Python and library versions, settings that change the figures, load average."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dists = (
        "mindspore",
        "numpy",
        "torch",
        "mg-data",
        "mg-tae",
        "mg-transformer",
        "mg-parallel",
        "mg-train",
        "mg-demo",
    )
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "ram_gib": _meminfo_gib("MemTotal"),
        "ram_available_gib": _meminfo_gib("MemAvailable"),
        "os": platform.platform(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "versions": {name: _version(name) for name in dists},
        "environment": {
            key: os.environ[key]
            for key in ("ONEDNN_MAX_CPU_ISA", "MS_DEV_LAUNCH_BLOCKING", "OMP_NUM_THREADS", "GLOG_v")
            if key in os.environ
        },
        "git": _git_commit(),
        "load_before": list(os.getloadavg()),
    }


def machine_lines(machine: dict) -> list[str]:
    ram = machine["ram_gib"]
    avail = machine["ram_available_gib"]
    cpus = f"{machine['logical_cpus']} logical CPUs"
    if machine["usable_cpus"] != machine["logical_cpus"]:
        cpus += f" ({machine['usable_cpus']} usable)"
    mem = f"{ram:.1f} GiB RAM ({avail:.1f} GiB available at start)" if ram and avail else "RAM unknown"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    missing = [k for k, v in machine["versions"].items() if not v]
    lines = [
        f"machine: {machine['cpu']}; {cpus}; {mem}",
        f"os: {machine['os']}; python {machine['python']}",
        f"versions: {versions}" + (f" (not installed: {', '.join(missing)})" if missing else ""),
    ]
    if machine["environment"]:
        lines.append("environment: " + ", ".join(f"{k}={v}" for k, v in machine["environment"].items()))
    if machine["git"]:
        lines.append(f"git: {machine['git']}")
    load = "load average 1/5/15 min: before " + " ".join(f"{v:.2f}" for v in machine["load_before"])
    if machine.get("load_after"):
        load += ", after " + " ".join(f"{v:.2f}" for v in machine["load_after"])
    lines.append(
        load + f" on {machine['usable_cpus']} CPUs (a benchmark adds up to ~2 itself; more means sharing)"
    )
    return lines


# ------------------------------------------------------------------------------------------------------ running


@dataclasses.dataclass
class Result:
    benchmark: Benchmark
    command: list[str]
    status: str = "ok"  # ok, failed, timeout, no figures
    returncode: int | None = None
    wall_s: float = 0.0
    rows: list[Row] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    stderr_tail: list[str] = dataclasses.field(default_factory=list)  # or of stdout, when stderr was empty
    tail_of: str = "stderr"
    peak_load: float | None = None  # highest 1-minute load average seen while it ran (sampled every 5 s)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _tree(root: int) -> list[int]:
    """`root` and all its descendants (read from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a benchmark and every process it started (msrun workers run in sessions of their own): stop the
    whole tree first so nothing forks or gets re-parented while it is listed, then kill it."""
    stopped: set[int] = set()
    for _ in range(5):
        new = [pid for pid in _tree(proc.pid) if pid not in stopped]
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        stopped.update(new)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: its group id is its pid
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # msrun, and the literal `python` it starts for each worker, must be this environment's.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings would bury the end of stderr
    env["PYTHONUNBUFFERED"] = "1"  # so a timed-out benchmark still shows what it printed
    return env


def run_one(bench: Benchmark, full: bool, timeout: float, tail: int = 15) -> Result:
    result = Result(bench, bench.command(full))
    workdir = Path(tempfile.mkdtemp(prefix="mg-bench-"))  # MindSpore drops rank_*/ and *.ir files in the cwd
    try:
        out_path, err_path = workdir / "stdout.txt", workdir / "stderr.txt"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                result.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=child_env(),
                start_new_session=True,
            )
            try:
                while result.returncode is None:
                    left = start + timeout - time.perf_counter()
                    if left <= 0:
                        kill_tree(proc)
                        result.status = "timeout"
                        result.problems.append(
                            f"timed out after {timeout:g} s (killed with its child processes)"
                        )
                        break
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        result.returncode = proc.wait(timeout=min(left, 5.0))
                    load = os.getloadavg()[0]
                    result.peak_load = load if result.peak_load is None else max(result.peak_load, load)
            except BaseException:  # Ctrl-C: leave nothing running behind us
                kill_tree(proc)
                raise
            result.wall_s = time.perf_counter() - start
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.rows, errors = parse_lines(stdout)
    result.problems += errors
    others = sorted({row.benchmark for row in result.rows} - {bench.name})
    if others:
        result.problems.append(f"MG-BENCH lines name {others}, expected {bench.name!r}")
    if result.status == "ok" and result.returncode != 0:
        result.status = "failed"
        result.problems.insert(0, f"exit status {result.returncode}")
    if result.status == "ok" and not result.rows:
        result.status = "no figures"
        result.problems.insert(0, "exited 0 but printed no MG-BENCH line")
    if result.status == "ok" and errors:
        result.status = "failed"
    if not result.ok:
        lines = [line for line in stderr.splitlines() if line.strip()]
        if not lines:  # some scripts report their failure on stdout
            lines = [line for line in stdout.splitlines() if line.strip()]
            result.tail_of = "stdout (stderr was empty)"
        result.stderr_tail = lines[-tail:]
    return result


# ------------------------------------------------------------------------------------------------------- output


def fmt_number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:#.3g}"  # keeps trailing zeros: 20.0, 1.00


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}x" if value >= 100 else f"{value:.2f}x"


def format_table(rows: Sequence[Row]) -> str:
    """benchmark | figure | ours | reference (name) | ratio | unit, the benchmark named on its first row only."""
    header = ("benchmark", "figure", "ours", "reference (name)", "ratio", "unit")
    body, last = [], None
    for row in rows:
        reference = fmt_number(row.reference)
        if row.reference is not None and row.reference_name:
            reference += f" ({row.reference_name})"
        name = row.benchmark if row.benchmark != last else ""
        last = row.benchmark
        body.append((name, row.figure, fmt_number(row.ours), reference, fmt_ratio(row.ratio), row.unit))
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]
    right = {2, 4}  # numbers right-aligned

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]
    out.append(
        "ratio: ours/reference where higher is better, reference/ours where lower is better; "
        "> 1 means ours is better"
    )
    return "\n".join(out)


def _figures(rows: Sequence[Row]) -> str:
    return f"{len(rows)} figure{'s' * (len(rows) != 1)}"


def format_status(results: Sequence[Result]) -> str:
    width = max((len(r.benchmark.name) for r in results), default=10)
    out = []
    for r in results:
        figures = _figures(r.rows)
        load = f"  peak 1-min load {r.peak_load:.1f}" if r.peak_load is not None else ""
        out.append(
            f"{r.benchmark.name:<{width}}  {r.status.upper() if not r.ok else 'ok':<10}  "
            f"{r.wall_s:7.1f} s  {figures:<11}{load}"
        )
        if not r.ok or r.problems:
            for problem in r.problems:
                out.append(f"    {problem}")
            out.append(f"    command: {' '.join(r.command)}")
            if r.stderr_tail:
                out.append(f"    last lines of {r.tail_of}:")
                out += [f"      {line}" for line in r.stderr_tail]
    return "\n".join(out)


def select(registry: Sequence[Benchmark], only: Sequence[str] | None) -> list[Benchmark]:
    if not only:
        return list(registry)
    return [b for b in registry if any(pattern in b.name for pattern in only)]


def list_benchmarks(registry: Sequence[Benchmark]) -> str:
    width = max(len(b.name) for b in registry)
    out = []
    for b in registry:
        out.append(f"{b.name:<{width}}  {b.what}")
        out.append(f"{'':<{width}}  {b.script} {' '.join(b.quick)}".rstrip())
    return "\n".join(out)


def main(argv: Sequence[str] | None = None, registry: Sequence[Benchmark] = REGISTRY) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Progress goes to stderr; the machine description and the table go to stdout.",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run the benchmarks whose name contains any of these"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their quick arguments")
    parser.add_argument("--full", action="store_true", help="run each script with its own defaults")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine description here")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per benchmark before it is killed (default 1800)"
    )
    args = parser.parse_args(argv)

    chosen = select(registry, args.only)
    if not chosen:
        print(f"no benchmark name contains any of {args.only}; see --list", file=sys.stderr)
        return 2
    if args.list:
        print(list_benchmarks(chosen))
        return 0

    machine = describe_machine()
    started = time.perf_counter()
    results = []
    for i, bench in enumerate(chosen, 1):
        print(
            f"[{i}/{len(chosen)}] {bench.name}: {' '.join(bench.command(args.full)[1:])}",
            file=sys.stderr,
            flush=True,
        )
        result = run_one(bench, args.full, args.timeout)
        results.append(result)
        verdict = "ok" if result.ok else result.status.upper()
        print(
            f"[{i}/{len(chosen)}] {bench.name}: {verdict} in {result.wall_s:.1f} s ({_figures(result.rows)})",
            file=sys.stderr,
            flush=True,
        )
    total = time.perf_counter() - started
    machine["load_after"] = list(os.getloadavg())

    mode = (
        "--full (each script's defaults)" if args.full else "quick arguments (--full: each script's defaults)"
    )
    print("\n".join(machine_lines(machine)))
    print(f"run: {len(chosen)} benchmark{'s' * (len(chosen) != 1)}, {mode}, total wall {total:.0f} s\n")
    rows = [row for result in results for row in result.rows]
    if rows:
        print(format_table(rows))
    else:
        print("(no figures)")
    print()
    print(format_status(results))
    failed = [r.benchmark.name for r in results if not r.ok]
    if failed:
        print(f"\n{len(failed)} of {len(results)} benchmarks did not complete: {', '.join(failed)}")

    if args.json:
        report = {
            "machine": machine,
            "full": args.full,
            "wall_s": total,
            "benchmarks": [
                {
                    "name": r.benchmark.name,
                    "command": r.command,
                    "status": r.status,
                    "returncode": r.returncode,
                    "wall_s": r.wall_s,
                    "peak_load": r.peak_load,
                    "problems": r.problems,
                    "tail": {"of": r.tail_of, "lines": r.stderr_tail},
                    "rows": [row.as_dict() for row in r.rows],
                }
                for r in results
            ],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
