"""Several network hosts on one Linux machine, for multi-node tests: one network namespace per host, joined by a
bridge in another namespace, each host with its own IPv4 address.

msrun decides which node starts the scheduler by asking whether `--master_addr` is one of the node's own
addresses, so two msrun invocations on one host would both start one. In separate namespaces only the first host
owns the master address, exactly as on a real cluster, and the workers of the other host reach it over the
bridge. Needs root (CAP_NET_ADMIN) and iproute2's `ip`; `SimulatedHosts.available()` says whether both are here.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Sequence


class SimulatedHosts:
    """`with SimulatedHosts(2) as hosts:` -> `hosts.addresses[i]` and `hosts.prefix(i)` (the command prefix
    that runs a program on host i). Everything it creates is removed on exit."""

    def __init__(self, count: int, subnet: str | None = None):
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count = count
        tag = f"{os.getpid() % 10000}{random.randint(0, 99):02d}"
        self.names = [f"mgh{tag}n{i}" for i in range(count)]
        self.bridge_ns = f"mgh{tag}br"
        base = subnet or f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self.addresses = [f"{base}.{i + 1}" for i in range(count)]
        self._created: list[str] = []

    @staticmethod
    def available() -> bool:
        """True when namespaces can be made here (root and `ip` on PATH)."""
        return shutil.which("ip") is not None and hasattr(os, "geteuid") and os.geteuid() == 0

    @staticmethod
    def may_skip() -> bool:
        """True when a multi-node test may be skipped here: namespaces cannot be made and `MG_REQUIRE_NETNS=1`
        (set by CI) does not demand them, so a CI machine that lost root or `ip` fails instead of skipping."""
        return not SimulatedHosts.available() and os.environ.get("MG_REQUIRE_NETNS") != "1"

    def prefix(self, host: int) -> list[str]:
        """Command prefix that runs a program inside host `host`'s namespace."""
        return ["ip", "netns", "exec", self.names[host]]

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def __enter__(self) -> SimulatedHosts:
        if not self.available():
            raise RuntimeError("simulated hosts need root (CAP_NET_ADMIN) and iproute2's `ip` on PATH")
        try:
            self._ip("netns", "add", self.bridge_ns)
            self._created.append(self.bridge_ns)
            self._ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.bridge_ns, "link", "set", "br0", "up")
            for i, name in enumerate(self.names):
                self._ip("netns", "add", name)
                self._created.append(name)
                self._ip("-n", name, "link", "set", "lo", "up")
                host_end, bridge_end = f"h{i}", f"b{i}"
                self._ip(
                    "link",
                    "add",
                    host_end,
                    "netns",
                    name,
                    "type",
                    "veth",
                    "peer",
                    bridge_end,
                    "netns",
                    self.bridge_ns,
                )
                self._ip("-n", name, "addr", "add", f"{self.addresses[i]}/24", "dev", host_end)
                self._ip("-n", name, "link", "set", host_end, "up")
                self._ip("-n", self.bridge_ns, "link", "set", bridge_end, "master", "br0")
                self._ip("-n", self.bridge_ns, "link", "set", bridge_end, "up")
        except subprocess.CalledProcessError as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(
                f"could not create simulated hosts ({' '.join(exc.cmd)}: {exc.stderr.strip()}); "
                "multi-node tests need root and iproute2"
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        for name in reversed(self._created):  # deleting a namespace deletes its veth ends too
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
        self._created.clear()


def run_on(hosts: SimulatedHosts | None, host: int, command: Sequence[str]) -> list[str]:
    """`command` run on simulated host `host` (unchanged without hosts)."""
    return [*hosts.prefix(host), *command] if hosts is not None else list(command)
