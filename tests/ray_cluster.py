"""A throwaway Ray cluster for the tests: ``ray start --head`` on this machine, as a team runs one, which the
executor joins by its address.

Everything the cluster opens is on a free port and under its own temporary folder, so two test sessions (or a
cluster someone else runs on this machine) do not meet. It is stopped by its own process group, never with
``ray stop`` (which stops every Ray cluster of the machine). Token authentication is off for it
(``RAY_AUTH_MODE=disabled``): Ray 2.59+ turns it on for a ``ray start`` whenever ``~/.ray/auth_token`` exists (a
local ``ray.init`` writes one), and a driver joining by an explicit address only sends a token when told to; the
cluster lives for one test module, on this machine. Use the `ray_cluster` fixture (module-scoped: one
start, about 6 s, for a module's tests) by importing it into a test module, or `running_ray` directly.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import env, free_port, signal_group

__all__ = ["ray_cluster", "ray_missing", "running_ray"]


def _ray_cli() -> str | None:
    beside = Path(sys.executable).parent / "ray"  # the virtual environment's own, even when it is not on PATH
    return str(beside) if beside.exists() else shutil.which("ray")


def ray_missing() -> str | None:
    """Why a Ray cluster cannot start here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (the ray extra installs it: pip install 'lightning-scaling[ray]')"
    if _ray_cli() is None:
        return "the `ray` command is not found beside this Python or on PATH"
    return None


def _stop(proc: subprocess.Popen) -> None:
    """The cluster's whole process group: SIGTERM, then SIGKILL for what is left (Ray's servers linger)."""
    signal_group(proc, signal.SIGTERM, 1)
    signal_group(proc, signal.SIGKILL, 10)


@contextmanager
def running_ray(num_cpus: int = 2, timeout: float = 90.0) -> Iterator[str]:
    """A one-node Ray cluster of `num_cpus` CPUs and no GPU; yields its address (``127.0.0.1:port``).

    Its workers import this checkout (``PYTHONPATH``), as the runs' nodes would have the package installed.
    """
    # a short folder: Ray's socket paths under it must stay within the 107 characters a Unix socket allows
    temp = Path(tempfile.mkdtemp(prefix="ls-ray-"))
    port = free_port()
    log_path = temp / "ray-start.log"
    cmd = [_ray_cli(), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
           f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--temp-dir={temp}"]  # no --ray-client-server-port: the client server needs ray[client], not installed
    cluster_env = {**env(), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=cluster_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ray start did not come up (exit {proc.poll()}):\n"
                                     f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """The address of a running two-CPU Ray cluster, for the module's tests (skips with the reason where Ray cannot
    run)."""
    reason = ray_missing()
    if reason:
        pytest.skip(reason)
    with running_ray(num_cpus=2) as address:
        yield address
