"""Tests of tools/bench_summary.py: MG-BENCH parsing, the table, failures and timeouts of benchmark processes
(tiny fake benchmarks through a registry override), --list, and the commands of tools/README.md as written."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent
ROOT = TOOLS.parent
# Benchmarks that do not print MG-BENCH lines yet (being rewritten); remove a name once its script does.
PENDING: set[str] = set()


def _load():
    spec = importlib.util.spec_from_file_location("bench_summary", TOOLS / "bench_summary.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_summary"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


bs = _load()


def mg_line(benchmark: str, *rows: dict) -> str:
    return "MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": list(rows)})


def row(figure="f", ours=2.0, reference=4.0, reference_name="ref", unit="s", better="lower") -> dict:
    return dict(
        figure=figure, ours=ours, reference=reference, reference_name=reference_name, unit=unit, better=better
    )


# ------------------------------------------------------------------------------------------------------ parsing


def test_parse_lines_reads_rows_and_orients_ratios():
    text = "\n".join(
        [
            "human-readable table   MG-BENCH is not at the start of this line",
            mg_line(
                "pkg/a",
                row("time", 2.0, 4.0, "plain", "s", "lower"),
                row("speed", 30.0, 10.0, "plain", "frames/s", "higher"),
            ),
            "more text",
            "  " + mg_line("pkg/a", row("psnr", 31.5, None, None, "dB", "higher")),  # indented: still read
        ]
    )
    rows, errors = bs.parse_lines(text)
    assert errors == []
    assert [r.figure for r in rows] == ["time", "speed", "psnr"]
    time_row, speed_row, psnr_row = rows
    assert time_row.benchmark == "pkg/a" and time_row.unit == "s"
    assert time_row.ratio == pytest.approx(2.0)  # lower is better: reference / ours
    assert speed_row.ratio == pytest.approx(3.0)  # higher is better: ours / reference
    assert psnr_row.ratio is None and psnr_row.reference is None and psnr_row.reference_name is None
    # worse than the reference in both directions gives < 1
    slower = bs.parse_lines(mg_line("b", row(ours=5.0, reference=4.0, better="lower")))[0][0]
    assert slower.ratio == pytest.approx(0.8)
    as_json = json.loads(json.dumps(speed_row.as_dict()))
    assert as_json["ratio"] == pytest.approx(3.0) and as_json["reference_name"] == "plain"


def test_parse_lines_reports_malformed_lines_and_rows():
    text = "\n".join(
        [
            "MG-BENCH {not json",
            "MG-BENCH " + json.dumps({"rows": []}),  # no benchmark name
            mg_line("pkg/b", row(better="faster"), row(ours="fast"), row(ours=None), row(figure="ok")),
        ]
    )
    rows, errors = bs.parse_lines(text)
    assert [r.figure for r in rows] == ["ok"]
    assert len(errors) == 5
    assert "better must be 'lower' or 'higher'" in errors[2]
    assert "ours must be a number" in errors[3]


def test_ratio_is_undefined_without_a_usable_reference():
    zero = bs.Row("b", "f", 0.0, 3.0, "ref", "s", "lower")  # lower is better, ours 0: no finite ratio
    assert zero.ratio is None
    assert bs.Row("b", "f", 1.0, 0.0, "ref", "x", "higher").ratio is None
    assert bs.Row("b", "f", float("nan"), 1.0, "ref", "x", "higher").ratio is None
    assert bs.Row("b", "f", 1.0, 1.0, "ref", "x", "higher").ratio == 1.0


# ------------------------------------------------------------------------------------------------------- output


def test_format_table_aligns_columns_and_states_the_ratio_direction():
    rows = [
        bs.Row("mg-x/bench_one", "forward time", 0.5, 1.5, "plain", "s", "lower"),
        bs.Row("mg-x/bench_one", "memory", 1234.5, 2469.0, "plain path", "MB", "lower"),
        bs.Row("mg-y/bench_two", "PSNR", 31.25, None, None, "dB", "higher"),
        bs.Row("mg-y/bench_two", "conv rate", 43.8, 0.175, "MindSpore conv", "GFLOP/s", "higher"),
    ]
    lines = bs.format_table(rows).splitlines()
    header, rule, *body, note = lines
    assert header.split() == ["benchmark", "figure", "ours", "reference", "(name)", "ratio", "unit"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert len(body) == 4
    assert body[0].startswith("mg-x/bench_one") and body[1].startswith(" ")  # name on its group's first row
    assert body[2].startswith("mg-y/bench_two")
    assert "0.500" in body[0] and "1.50 (plain)" in body[0] and "3.00x" in body[0]
    assert "1,234" in body[1] and "2,469 (plain path)" in body[1] and "2.00x" in body[1]
    assert re.search(r"PSNR\s+31\.2\s+-\s+-\s+dB$", body[2])
    assert "0.175 (MindSpore conv)" in body[3] and "250x" in body[3]
    # columns line up: every row's ratio ends where the header's does, every unit starts where its header does
    ratio_end = header.index("ratio") + len("ratio")
    unit_start = header.index("unit")
    for line in body:
        assert line[ratio_end - 1] == "x" or line[ratio_end - 1] == "-"
        assert line[unit_start - 2 : unit_start] == "  " and line[unit_start] != " "
    assert "ours/reference where higher is better" in note and "> 1 means ours is better" in note


def test_fmt_number_keeps_three_significant_digits():
    assert bs.fmt_number(None) == "-"
    assert bs.fmt_number(20.0) == "20.0"
    assert bs.fmt_number(0.9134) == "0.913"
    assert bs.fmt_number(3354.2) == "3,354"
    assert bs.fmt_number(2.5e-7) == "2.5e-07"
    assert bs.fmt_number(float("inf")) == "inf"
    assert bs.fmt_ratio(None) == "-" and bs.fmt_ratio(1.234) == "1.23x" and bs.fmt_ratio(251.4) == "251x"


# ------------------------------------------------------------------------------------------ running benchmarks


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_failures_and_timeouts_are_reported_and_the_others_still_run(tmp_path, capsys):
    line = mg_line("fake/good", row("speed", 30.0, 10.0, "slow way", "frames/s", "higher"))
    grandchild = tmp_path / "grandchild.pid"
    registry = [
        bs.Benchmark("fake/crash", _script(tmp_path, "crash", "import sys\nsys.exit('ValueError: boom')\n")),
        bs.Benchmark(
            "fake/hang",
            _script(
                tmp_path,
                "hang",
                f"""
                import subprocess, sys, time
                print("started", flush=True)
                # like an msrun worker: a process in a session of its own
                worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                          start_new_session=True)
                open({str(grandchild)!r}, "w").write(str(worker.pid))
                time.sleep(120)
                """,
            ),
        ),
        bs.Benchmark("fake/silent", _script(tmp_path, "silent", "print('a table without MG-BENCH lines')\n")),
        bs.Benchmark(
            "fake/good",
            _script(
                tmp_path, "good", f"import sys\nprint('human output')\nprint({line!r})\nprint(sys.argv[1:])\n"
            ),
            quick=("--quick",),
        ),
    ]
    report_path = tmp_path / "report.json"
    start = time.monotonic()
    status = bs.main(["--timeout", "4", "--json", str(report_path)], registry=registry)
    assert time.monotonic() - start < 30
    out, err = capsys.readouterr()
    assert status == 1

    report = json.loads(report_path.read_text())
    by_name = {b["name"]: b for b in report["benchmarks"]}
    assert [b["name"] for b in report["benchmarks"]] == [b.name for b in registry]
    assert by_name["fake/crash"]["status"] == "failed" and by_name["fake/crash"]["returncode"] == 1
    assert by_name["fake/crash"]["tail"] == {"of": "stderr", "lines": ["ValueError: boom"]}
    assert by_name["fake/hang"]["status"] == "timeout"
    assert 4 <= by_name["fake/hang"]["wall_s"] < 15
    assert by_name["fake/silent"]["status"] == "no figures"
    assert by_name["fake/good"]["status"] == "ok"
    assert by_name["fake/good"]["command"][0] == sys.executable
    assert by_name["fake/good"]["command"][-1] == "--quick"
    assert by_name["fake/good"]["rows"][0]["ratio"] == pytest.approx(3.0)
    assert report["machine"]["cpu"] and len(report["machine"]["load_after"]) == 3

    # the worker the hung benchmark started in its own session was killed with it
    pid = int(grandchild.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)

    assert "fake/good" in out and "30.0" in out and "10.0 (slow way)" in out and "3.00x" in out
    assert re.search(r"fake/crash\s+FAILED", out) and "ValueError: boom" in out
    assert re.search(r"fake/hang\s+TIMEOUT", out) and "timed out after 4 s" in out
    assert "last lines of stdout (stderr was empty):\n      started" in out
    assert re.search(r"fake/silent\s+NO FIGURES", out) and "printed no MG-BENCH line" in out
    assert "3 of 4 benchmarks did not complete" in out
    assert out.startswith("machine: ") and "load average" in out
    for i, bench in enumerate(registry, 1):  # progress on stderr, with each benchmark's time
        assert re.search(rf"\[{i}/4\] {bench.name}: (ok|FAILED|TIMEOUT|NO FIGURES) in \d+\.\d s", err)


def test_only_selects_by_substring_and_full_drops_the_quick_arguments(tmp_path, capsys):
    line = mg_line("fake/argv", row())
    script = _script(tmp_path, "argv", f"import sys\nprint({line!r})\nprint('argv', sys.argv[1:])\n")
    registry = [
        bs.Benchmark("fake/argv", script, quick=("--n", "1")),
        bs.Benchmark("other/never", _script(tmp_path, "never", "raise SystemExit(9)\n")),
    ]
    report = tmp_path / "r.json"
    assert bs.main(["--only", "argv", "zzz", "--full", "--json", str(report)], registry=registry) == 0
    assert [b["command"][1:] for b in json.loads(report.read_text())["benchmarks"]] == [[script]]
    assert bs.main(["--only", "fake", "--json", str(report)], registry=registry) == 0
    assert json.loads(report.read_text())["benchmarks"][0]["command"][1:] == [script, "--n", "1"]
    capsys.readouterr()
    assert bs.main(["--only", "nothing-matches"], registry=registry) == 2
    assert "no benchmark name contains" in capsys.readouterr().err


def test_list_names_every_registered_benchmark_and_its_script():
    out = io.StringIO()
    with redirect_stdout(out):
        assert bs.main(["--list"]) == 0
    text = out.getvalue()
    for bench in bs.REGISTRY:
        assert bench.name in text and bench.script in text
        assert (ROOT / bench.script).is_file()
    names = [b.name for b in bs.REGISTRY]
    assert len(names) == len(set(names))
    assert {p.relative_to(ROOT).as_posix() for p in ROOT.glob("packages/*/benchmarks/*.py")} == {
        b.script for b in bs.REGISTRY
    }, "every package benchmark is registered"


@pytest.mark.parametrize("bench", bs.REGISTRY, ids=lambda b: b.name)
def test_registered_scripts_print_mg_bench_lines_under_their_name(bench):
    if bench.name in PENDING:
        pytest.skip(f"{bench.name} does not follow the MG-BENCH convention yet")
    text = (ROOT / bench.script).read_text()
    package, stem = bench.name.split("/")
    assert bench.script == f"packages/{package}/benchmarks/{stem}.py"
    assert '"MG-BENCH "' in text
    assert re.search(rf'mg_bench\(\s*"{re.escape(bench.name)}"', text), (
        f"no mg_bench({bench.name!r}, ...) call"
    )


# ------------------------------------------------------------------------------------------------------- README


def readme_blocks(language: str | None = None) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block in tools/README.md."""
    text = (TOOLS / "README.md").read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    return [(lang, body) for lang, body in blocks if language is None or lang == language]


def readme_commands() -> list[str]:
    commands = []
    for lang, body in readme_blocks():
        if lang in ("", "bash", "sh", "shell", "console"):  # "text" and "python" blocks are not commands
            commands += [
                line.strip() for line in body.splitlines() if line.strip() and not line.startswith("#")
            ]
    return commands


def test_readme_shows_only_commands_this_file_runs():
    assert {lang for lang, _ in readme_blocks()} <= {"bash", "python", "text"}
    assert readme_commands() and all(c.startswith("python tools/bench_summary.py") for c in readme_commands())


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs_as_written(command):
    argv = shlex.split(command, comments=True)
    if argv[0] == "python":
        argv[0] = sys.executable
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, f"{command} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip()
    if "--only" in argv:  # a real benchmark ran and its figures are in the table
        assert re.search(r"ratio: ours/reference", proc.stdout), proc.stdout


def test_readme_helper_is_the_one_in_the_benchmarks_and_its_output_parses():
    (_, helper), *_ = readme_blocks("python")
    definition = helper[helper.index("def mg_bench") : helper.index("# usage")].strip()
    for bench in bs.REGISTRY:
        if bench.name not in PENDING:
            assert definition in (ROOT / bench.script).read_text(), f"{bench.script} has another helper"
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(helper, "README.md", "exec"), {})
    rows, errors = bs.parse_lines(out.getvalue())
    assert errors == [] and rows and all(r.benchmark == "mg-example/bench_example" for r in rows)
