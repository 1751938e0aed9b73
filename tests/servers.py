"""Real servers for the tests: an `mlflow server` on any backend store, and a throwaway PostgreSQL cluster.

PostgreSQL: Debian's server binaries (`make test` installs the `postgresql` package where it is missing, through
`tools/ensure_debian_package.sh`). The server refuses to run as root, so as root the cluster is created and run as
the `postgres` user, in a temporary data directory, listening on 127.0.0.1 only, with trust authentication for
local connections (nothing else can reach it). Tests that need it skip with the reason when the binaries are absent.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [out.get("PYTHONPATH")])])
    out.setdefault("MPLBACKEND", "Agg")
    out["MLFLOW_DISABLE_TELEMETRY"] = "true"
    out["DO_NOT_TRACK"] = "true"
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def start_mlflow_server(tmp: Path, port: int, backend: str | None = None, workers: int = 1) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` over `backend` (default: sqlite in `tmp`), serving artifacts from `tmp`."""
    log = open(tmp / "mlflow-server.log", "ab")
    server_env = env()
    # The server's background job runners (GenAI evaluation jobs) are not needed to browse runs; on a small
    # machine they cost several busy processes.
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend or f"sqlite:///{tmp}/mlflow.db",
        # Runs logged locally record absolute artifact locations, which the server reads directly; the proxy
        # destination is where runs created through the server keep theirs.
        "--serve-artifacts", "--artifacts-destination", str(tmp / "mlartifacts"),
        "--workers", str(workers),
    ]
    return subprocess.Popen(cmd, cwd=tmp, env=server_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def signal_group(proc: subprocess.Popen, sig, wait: float) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM, 20)
    signal_group(proc, signal.SIGKILL, 10)  # whatever is left of the group (uvicorn workers, job runners)


def wait_healthy(proc: subprocess.Popen, base: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            status, _ = get(f"{base}/health", timeout=5)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


# -- PostgreSQL -------------------------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server binaries (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def postgres_missing() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    if postgres_bin() is None:
        return ("PostgreSQL server binaries not found: install Debian's postgresql (make test installs it: "
                "tools/ensure_debian_package.sh postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (the dev extra installs psycopg2-binary)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as the postgres user"
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres():
    """A fresh PostgreSQL cluster on 127.0.0.1 with a database `mlflow`; yields its SQLAlchemy URI."""
    import tempfile

    bin_dir = postgres_bin()
    # its own directory under the system's temporary folder: the postgres user must reach it, and pytest's
    # folders are private to the user running the tests
    base = Path(tempfile.mkdtemp(prefix="lightning-scaling-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    log = base / "server.log"

    def run(cmd):
        done = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stdout}{done.stderr}"
                               + (log.read_text()[-2000:] if log.exists() else ""))
    run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"])
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"])
    try:
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"])
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


class MlflowServer:
    """An `mlflow server` over `backend` (default: sqlite in `tmp`) that can be stopped and started again on the
    same port, as an outage would: `start()` returns once it is healthy."""

    def __init__(self, tmp: Path, backend: str | None = None, workers: int = 1):
        self.tmp, self.backend, self.workers = Path(tmp), backend, workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.proc = start_mlflow_server(self.tmp, self.port, self.backend, workers=self.workers)
        try:
            wait_healthy(self.proc, self.uri, self.tmp / "mlflow-server.log")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
        self.proc = None


@contextmanager
def mlflow_on(tmp: Path, backend: str, workers: int = 2):
    """An `mlflow server` over `backend`, healthy; yields its http URI."""
    server = MlflowServer(tmp, backend, workers).start()
    try:
        yield server.uri
    finally:
        server.stop()
