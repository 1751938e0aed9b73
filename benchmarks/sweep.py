"""The sweep on local workers: the quick demo sweep's wall time with 2 workers against 1 (same plan, same machine,
side by side), and the local executor's dispatch overhead (a tiny run through `LocalExecutor` against the same
command started directly).

    python benchmarks/sweep.py [--config examples/tiny_gpt/sweep_quick.yaml] [--repeats 3]

Prints a table; the results are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "examples/tiny_gpt/config.yaml"), "--trainer.max_steps=30",
        "--trainer.val_check_interval=10", "--trainer.limit_val_batches=2", "--trainer.enable_model_summary=false",
        "--data.init_args.max_bytes=400000", "--data.init_args.val_windows=8",
        "--trainer.callbacks.init_args.bootstrap=0"]


def sweep_seconds(config: str, workers: int, folder: Path, target: bool = False) -> tuple[float, int, str, str]:
    """(the sweep's wall time from its own closing line, runs finished, what the refits took, the target's line)."""
    uri = f"sqlite:///{folder / f'w{workers}.db'}"
    cmd = [sys.executable, "-m", "lightning_scaling.cli", "sweep", "--config", config, "--workers", str(workers),
           "--tracking-uri", uri, "--folder", str(folder / f"w{workers}")] + (["--train-target"] if target else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (folder / f"w{workers}.out").write_text(out)
    closing = next(line for line in out.splitlines() if line.startswith("sweep finished in"))
    seconds = float(closing.split("sweep finished in", 1)[1].split()[0])
    runs = sum(line.lstrip().startswith(("finished ", "stopped ")) for line in out.splitlines())
    refit = closing.split("refits took", 1)[-1].strip()
    target_line = next((line for line in out.splitlines() if line.startswith("target run")), "")
    return seconds, runs, refit, target_line


def dispatch_overhead(folder: Path, repeats: int) -> tuple[float, float]:
    from lightning_scaling.executors import Job, LocalExecutor

    direct, through = [], []
    for i in range(repeats):
        args = [*TINY, f"--trainer.logger.init_args.tracking_uri=sqlite:///{folder / 'd.db'}"]
        argv = [sys.executable, "-m", "lightning_scaling.cli", "train", *args]
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
        direct.append(time.perf_counter() - t0)
        with LocalExecutor(workers=1) as ex:
            t0 = time.perf_counter()
            (handle,) = ex.submit([Job(f"tiny{i}", tuple(argv), str(folder / f"tiny{i}.log"), cwd=str(ROOT))])
            assert handle.outcome().ok
            through.append(time.perf_counter() - t0)
    return min(direct), min(through)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "examples/tiny_gpt/sweep_quick.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-target", action="store_true", help="the 2-worker sweep then trains its "
                        "recommended run (its time is not in the sweep's wall time)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = {2: sweep_seconds(args.config, 2, folder, args.train_target), 1: sweep_seconds(args.config, 1, folder)}
        direct, through = dispatch_overhead(folder, args.repeats)
    print(f"sweep {Path(args.config).name}: | workers | wall s | runs | refits |")
    for w in (1, 2):
        s, n, refit, _ = rows[w]
        print(f"| {w} | {s:.0f} | {n} | {refit} |")
    print(f"speed-up 2 workers / 1: {rows[1][0] / rows[2][0]:.2f}x")
    if rows[2][3]:
        print(rows[2][3])
    print(f"tiny run direct {direct:.2f} s, through LocalExecutor {through:.2f} s: dispatch overhead "
          f"{through - direct:+.2f} s (min of {args.repeats})")


if __name__ == "__main__":
    main()
