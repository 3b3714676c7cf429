"""Test harness for distributed MindSpore code: run a function on N ranks under msrun and collect results.

`run_distributed(target, nprocs)` launches (on several simulated hosts with `hosts=SimulatedHosts(n)`); inside
the workers, `run_cases(cases)` runs many small cases in
one launch (a launch costs 15-25 s on CPU) and `CaseResults` gives each pytest test its own case back.
"""

from mg_parallel.testing.cases import CaseError, CaseResults, run_cases
from mg_parallel.testing.hosts import SimulatedHosts
from mg_parallel.testing.launcher import DistributedRunError, free_port, run_distributed

__all__ = [
    "CaseError",
    "CaseResults",
    "DistributedRunError",
    "SimulatedHosts",
    "free_port",
    "run_cases",
    "run_distributed",
]
