"""A throwaway single-node SLURM cluster for the tests, as `tests/servers.py` gives a throwaway PostgreSQL.

Debian's `slurm-wlm` and `munge` (`make test` installs them where they are missing, through
`tools/ensure_debian_package.sh`). Everything lives in one temporary directory: a MUNGE key and a `munged` of its
own (run as the `munge` user, on its own socket, so a system MUNGE is left alone), and a `slurm.conf` naming this
machine as the controller and the only node (its own ports, no accounting, no cgroups: `proctrack/linuxproc`,
`task/none`). The daemons run as root (``SlurmUser=root``), so the tests must too; they skip, saying why, where
that or a binary is missing. `SLURM_CONF` points the SLURM commands (``sbatch``, ``sinfo``, those submitit runs)
at this cluster: `cluster()` sets it in this process's environment while the cluster runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from servers import free_port

PARTITION = "lstest"
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "srun", "sinfo", "squeue", "scancel")


def slurm_missing() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    absent = [path for path in DAEMONS if not os.access(path, os.X_OK)]
    absent += [name for name in CLIENTS if shutil.which(name) is None]
    if absent:
        return (f"SLURM/MUNGE not installed ({', '.join(absent)} missing): install Debian's slurm-wlm and munge "
                "(make test installs them: tools/ensure_debian_package.sh slurm-wlm, munge)")
    if os.geteuid() != 0:
        return "the throwaway SLURM cluster runs its daemons as root (SlurmUser=root); these tests are not root"
    try:
        import pwd

        pwd.getpwnam("munge")
    except KeyError:
        return "no `munge` user to run munged as (the munge package creates it)"
    return None


@dataclass
class SlurmCluster:
    """A running cluster: its `partition`, the environment its commands need (`env`: ``SLURM_CONF``) and its
    directory `base` (logs: slurmctld.log, slurmd.log, munge/munged.log)."""

    base: Path
    partition: str = PARTITION
    node: str = field(default_factory=socket.gethostname)
    cpus: int = 2
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.base / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def logs(self, lines: int = 30) -> str:
        """The last `lines` of each daemon's log, to say why the cluster did not come up."""
        out = []
        for name in ("munged", "slurmctld", "slurmd"):
            log = self.base / ("munge" if name == "munged" else "") / f"{name}.log"
            for path in (log, self.base / f"{name}.out"):  # its log, then its own output
                if path.exists() and path.stat().st_size:
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                    out.append(f"--- {path.name} (last {lines} lines) ---\n" + "\n".join(text))
        return "\n".join(out)


def _memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 2048


def _write_munge(cluster: SlurmCluster) -> list[str]:
    """A fresh MUNGE key (owner munge, mode 400) and the command that starts munged on it."""
    cluster.base.chmod(0o755)  # munged (the munge user) reaches its own directory inside
    munge_dir = cluster.base / "munge"
    munge_dir.mkdir(mode=0o700)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (munge_dir, key):
        shutil.chown(path, "munge", "munge")
    return ["/usr/sbin/munged", "--foreground", "--force", f"--socket={munge_dir / 'munge.socket'}",
            f"--key-file={key}", f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'seed'}",
            f"--log-file={munge_dir / 'munged.log'}"]


def _write_conf(cluster: SlurmCluster) -> None:
    base = cluster.base
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    cluster.conf.write_text("\n".join([
        "ClusterName=lightningscaling",
        f"SlurmctldHost={cluster.node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={base / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/builtin",
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",  # the node's declared CPUs hold even where the machine has fewer
        "MinJobAge=300",
        "KillWait=5",
        f"NodeName={cluster.node} NodeAddr=127.0.0.1 CPUs={cluster.cpus} RealMemory={max(512, _memory_mb() // 2)}"
        " State=UNKNOWN",
        f"PartitionName={cluster.partition} Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))


def _start(cluster: SlurmCluster, name: str, cmd: list[str], **kwargs) -> None:
    log = open(cluster.base / f"{name}.out", "ab")
    cluster.processes[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                               env={**os.environ, **cluster.env}, start_new_session=True, **kwargs)
    log.close()


def node_state(cluster: SlurmCluster) -> str:
    """The node's state as `sinfo` says it ("idle", "down*", ...), or sinfo's error."""
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **cluster.env}, check=False)
    return (done.stdout.strip() if done.returncode == 0 else f"sinfo failed: {done.stderr.strip()}") or "(none)"


def _wait_idle(cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = "(not asked)"
    while time.monotonic() < deadline:
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode} while the SLURM cluster started:\n"
                                   f"{cluster.logs()}")
        state = node_state(cluster)
        if state == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the SLURM node is not idle after {timeout:.0f} s (sinfo: {state}):\n{cluster.logs()}")


def start(timeout: float = 60.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in a fresh temporary directory; return once `sinfo` shows the node idle.

    Raises:
        RuntimeError: a daemon exited or the node did not come up in `timeout` seconds (with the daemons' log
            tails); what was started is stopped first.
    """
    cluster = SlurmCluster(base=Path(tempfile.mkdtemp(prefix="lightning-scaling-slurm-")))
    try:
        munged = _write_munge(cluster)
        _write_conf(cluster)
        _start(cluster, "munged", munged, user="munge", group="munge", extra_groups=[])
        socket_path = cluster.base / "munge" / "munge.socket"
        deadline = time.monotonic() + 20
        while not socket_path.exists() and time.monotonic() < deadline and cluster.processes["munged"].poll() is None:
            time.sleep(0.1)
        _start(cluster, "slurmctld", ["/usr/sbin/slurmctld", "-D", "-c", "-f", str(cluster.conf)])
        _start(cluster, "slurmd", ["/usr/sbin/slurmd", "-D", "-c", "-f", str(cluster.conf), "-N", cluster.node])
        _wait_idle(cluster, timeout)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _stop_process(proc: subprocess.Popen, wait: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
            proc.wait(timeout=wait)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            pass


def stop(cluster: SlurmCluster) -> None:
    """Cancel the cluster's jobs, stop its daemons (slurmd, slurmctld, then munged) and remove its directory."""
    env = {**os.environ, **cluster.env}
    if cluster.processes.get("slurmctld") is not None and cluster.processes["slurmctld"].poll() is None:
        subprocess.run(["scancel", f"--partition={cluster.partition}"], env=env, capture_output=True, timeout=30,
                       check=False)
    for name in ("slurmd", "slurmctld", "munged"):
        if name in cluster.processes:
            _stop_process(cluster.processes[name])
    shutil.rmtree(cluster.base, ignore_errors=True)


@contextmanager
def cluster(timeout: float = 60.0):
    """A running single-node cluster, with ``SLURM_CONF`` set in this process's environment meanwhile (so that
    submitit's ``sbatch`` and the executor's ``sinfo``/``squeue`` reach it); yields the `SlurmCluster`."""
    running = start(timeout)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(running.conf)
    try:
        yield running
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        stop(running)
