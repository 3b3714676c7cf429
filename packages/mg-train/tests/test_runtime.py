"""Process-level safety nets: a phase that overruns `train.step_timeout` ends the process with every thread's
traceback even while the interpreter is blocked, and a renewed deadline does not fire."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import time
from mg_train.runtime import StepDeadline
deadline = StepDeadline({seconds}, "test")
for phase in range(3):
    deadline.arm(f"phase {{phase}}")
    time.sleep({work})
deadline.disarm()
time.sleep(1.5)  # past the deadline, disarmed: nothing fires
print("finished")
"""


def _run(seconds: float, work: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(seconds=seconds, work=work)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - start


def test_an_overrunning_phase_ends_the_process_with_tracebacks():
    done, elapsed = _run(seconds=1.0, work=30.0)
    assert done.returncode == 1 and "finished" not in done.stdout
    assert "Timeout (0:00:01)!" in done.stderr and 'File "<string>", line 7' in done.stderr  # the sleep
    assert elapsed < 15  # not the 90 s the phases would have taken


def test_phases_that_renew_the_deadline_in_time_finish():
    done, _ = _run(seconds=1.0, work=0.3)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr
