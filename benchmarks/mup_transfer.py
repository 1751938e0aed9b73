"""muP learning-rate transfer across width on the example transformer (the `mup` paper's Figure 1, on a CPU).

Yang et al. 2022 ("Tensor Programs V", Fig. 1): under the standard parametrisation (SP) the best learning rate of
a transformer drifts as it is widened; under muP it stays put, so an LR tuned on a small model transfers. This
script trains the example TinyGPT on the embedded stdlib byte corpus over a grid of widths x learning rates x seeds,
under both parametrisations, through the user-facing path (a Lightning `Trainer`, plus the `MuP` callback for
muP), and reports the best learning rate per width.

    SP        TinyGPT(d_model=w)                  readout nn.Linear (init std 0.02), attention 1/sqrt(d_head),
                                                  plain AdamW
    muP       TinyGPT(d_model=w, readout="mup",   MuReadout (zero init), attention 1/d_head, and the callback
              attn_scale="inverse",               MuP(base={"d_model": 64}, hidden_init="fixed"): base shapes,
              zero_readout=True)                  hidden init std 0.02/sqrt(w/64), AdamW LR of hidden matrices
                                                  lr/(w/64)
    muP-init  (opt-in, --parametrizations)        muP as above, but the readout starts like SP's at the base
                                                  width instead of at zero: N(0, 0.02^2) at width 64, effective
                                                  std 0.02 * 64/w (muP's 1/fan_in^2 variance) at width w. Its
                                                  weight is drawn with std 0.02/sqrt(w/64) before the callback;
                                                  mup's set_base_shapes multiplies it by sqrt(w/64) and MuReadout
                                                  divides its input by w/64.

Both: n_layer=2, n_head=4, seq_len=64, weight decay 0, AdamW betas (0.9, 0.95), batch 8 x 64 bytes, `--steps`
optimizer steps (default 200) with the learning rate `lr` (the base LR under muP) ramped linearly over the first
10% of the steps and then held constant (a `LambdaLR` returned by `configure_optimizers`, which the `MuP` callback
remaps to its per-group learning rates). At width 64 (the muP base width) SP and muP differ only in the attention
scale and the readout's zero init (muP-init: only in the attention scale).

Loss: mean cross-entropy (nats per byte) on the data module's fixed validation windows (256 windows of 64 bytes
from held-out stdlib files) after the last step, via `trainer.validate`. A run whose loss is NaN/inf or above the
initial ln(256) = 5.55 counts as diverged (loss = inf; a NaN training loss stops it early). The best LR of a width
is the grid point with the lowest loss averaged over seeds; "interpolated" is the vertex of the parabola through
that point and its two neighbours (in log2 LR), a sub-grid estimate. The mean training loss of the last 20 steps
is a secondary measure.

Runs go to `--workers` processes (default 2), each with one torch thread, largest widths first.

Run from the repository root:

    python benchmarks/mup_transfer.py                     # full: widths 64 128 256, LR 2^-12..2^-4, 2 seeds
    python benchmarks/mup_transfer.py --widths 64 128 256 512
    python benchmarks/mup_transfer.py --quick             # smoke test, ~1 minute: widths 32 64 128, 3 LRs, 30 steps
    python benchmarks/mup_transfer.py --parametrizations muP-init   # the muP variant with an SP-like readout init
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root, for `examples` and an uninstalled package
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # spawned workers inherit sys.path

PARAMETRIZATIONS = ("SP", "muP", "muP-init")
DEFAULT_PARAMETRIZATIONS = ("SP", "muP")
BASE_WIDTH = 64
TITLES = {"SP": "SP (standard parametrization)", "muP": f"muP (base width {BASE_WIDTH}), zero readout",
          "muP-init": f"muP (base width {BASE_WIDTH}), readout N(0, (0.02*{BASE_WIDTH}/w)^2)"}
MODEL = dict(n_layer=2, n_head=4, seq_len=64)
DATA = dict(seq_len=64, batch_size=8, max_bytes=4_000_000, val_windows=256)
WARMUP_FRACTION = 0.1
TRAIN_TAIL = 20  # steps averaged for the secondary (training-loss) measure
DIVERGED = math.log(256)  # the loss of a uniform prediction over bytes: above it, the run learned nothing
DEFAULT_PLOT = ROOT / "benchmarks" / "mup_transfer.png"


# ------------------------------------------------------------------------------------------------ worker process
def _init_worker(threads: int) -> None:
    import logging
    import warnings

    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO: quieten them after)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _warmup_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def train_one(job: dict) -> dict:
    """Train one (parametrization, width, lr, seed) and return its losses (runs in a worker process)."""
    import functools

    import lightning.pytorch as pl
    import torch
    from lightning.pytorch import Callback

    from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
    from lightning_scaling.callbacks import MuP

    class WarmupTinyGPT(TinyGPT):
        """TinyGPT whose AdamW LR ramps up linearly over `warmup_steps` steps, then stays constant."""

        warmup_steps = 0  # a plain attribute, not a hyperparameter: the MuP callback rebuilds the class from those

        def configure_optimizers(self):
            optimizer = super().configure_optimizers()
            schedule = functools.partial(_warmup_factor, warmup_steps=self.warmup_steps)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    class Recorder(Callback):
        def __init__(self):
            self.losses: list[float] = []
            self.lr_multipliers: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            self.losses.append(loss)
            if not math.isfinite(loss):
                trainer.should_stop = True  # NaN/inf: diverged, nothing more to learn from it

        def on_train_end(self, trainer, pl_module):
            base = job["lr"]
            self.lr_multipliers = sorted({round(g["lr"] / base, 6) for g in trainer.optimizers[0].param_groups})

    t0, c0 = time.perf_counter(), time.process_time()
    mup = job["parametrization"].startswith("muP")
    zero = job["parametrization"] == "muP"
    pl.seed_everything(job["seed"], verbose=False)
    extra = dict(readout="mup", attn_scale="inverse", zero_readout=zero) if mup else {}
    model = WarmupTinyGPT(d_model=job["width"], lr=job["lr"], **MODEL, **extra)
    if mup and not zero:  # see the module docstring: effective std 0.02 * BASE_WIDTH / width once the callback ran
        torch.nn.init.normal_(model.lm_head.weight, std=model.hparams.init_std / math.sqrt(job["width"] / BASE_WIDTH))
    model.warmup_steps = job["warmup"]
    data = ByteCorpusDataModule(seed=job["seed"], **DATA)
    recorder = Recorder()
    callbacks = [recorder] + ([MuP(base={"d_model": BASE_WIDTH}, hidden_init="fixed")] if mup else [])
    common = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    trainer = pl.Trainer(max_steps=job["steps"], num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
                         **common)
    trainer.fit(model, datamodule=data)
    losses = recorder.losses
    val_loss = float("nan")
    if losses and all(math.isfinite(x) for x in losses):
        val_loss = float(pl.Trainer(**common).validate(model, datamodule=data, verbose=False)[0]["val_loss"])
    tail = losses[-TRAIN_TAIL:]
    return {
        **job,
        "val_loss": val_loss,
        "train_tail": sum(tail) / len(tail) if tail else float("nan"),
        "steps_done": len(losses),
        "first_loss": losses[0] if losses else float("nan"),
        "lr_multipliers": recorder.lr_multipliers,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "torch": torch.__version__,
        "lightning": pl.__version__,
    }


# ------------------------------------------------------------------------------------------------ analysis
def effective(loss: float) -> float:
    """The loss used for comparisons: inf for a diverged run."""
    return loss if math.isfinite(loss) and loss <= DIVERGED else math.inf


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def grid(results: list[dict], key: str) -> dict[tuple[str, int, int], float]:
    """(parametrization, width, log2 lr) -> mean over seeds of the effective loss (inf if any seed diverged)."""
    cells: dict[tuple[str, int, int], list[float]] = {}
    for r in results:
        cells.setdefault((r["parametrization"], r["width"], r["log2_lr"]), []).append(effective(r[key]))
    return {k: mean(v) for k, v in cells.items()}


def best(losses: dict[int, float]) -> tuple[int | None, float, float]:
    """(argmin log2 lr, min loss, parabola-vertex estimate of the argmin) of {log2 lr: loss}."""
    finite = {k: v for k, v in losses.items() if math.isfinite(v)}
    if not finite:
        return None, math.inf, math.nan
    k = min(finite, key=lambda x: (finite[x], x))
    points = sorted(losses)
    i = points.index(k)
    vertex = float(k)
    if 0 < i < len(points) - 1 and k - points[i - 1] == points[i + 1] - k:  # equally spaced neighbours
        h = k - points[i - 1]
        lo, hi = losses[points[i - 1]], losses[points[i + 1]]
        if math.isfinite(lo) and math.isfinite(hi) and lo - 2 * finite[k] + hi > 0:
            vertex = k + h * max(-0.5, min(0.5, 0.5 * (lo - hi) / (lo - 2 * finite[k] + hi)))
    return k, finite[k], vertex


def fmt(x: float, digits: int = 3) -> str:
    return "div." if not math.isfinite(x) else f"{x:.{digits}f}"


def report(results: list[dict], params: list[str], widths: list[int], log2_lrs: list[int], seeds: list[int]) -> dict:
    """Print the tables and verdicts; return the per-width best LRs."""
    val = grid(results, "val_loss")
    train = grid(results, "train_tail")
    summary: dict = {}
    print("| parametrization | width | best LR (log2) | interpolated | best val loss | per-seed best (log2) "
          "| best by train loss (log2) | diverged runs |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for p in params:
        summary[p] = {}
        for w in widths:
            k, loss, vertex = best({lr: val[(p, w, lr)] for lr in log2_lrs})
            per_seed = []
            for s in seeds:
                ks, _, _ = best({r["log2_lr"]: effective(r["val_loss"]) for r in results
                                 if (r["parametrization"], r["width"], r["seed"]) == (p, w, s)})
                per_seed.append("-" if ks is None else str(ks))
            kt, _, _ = best({lr: train[(p, w, lr)] for lr in log2_lrs})
            n_div = sum(1 for r in results if (r["parametrization"], r["width"]) == (p, w)
                        and not math.isfinite(effective(r["val_loss"])))
            n_all = sum(1 for r in results if (r["parametrization"], r["width"]) == (p, w))
            summary[p][w] = {"best": k, "vertex": vertex, "loss": loss, "train_best": kt}
            print(f"| {p} | {w} | {'-' if k is None else k} | {vertex:+.2f} | {fmt(loss)} | {', '.join(per_seed)} "
                  f"| {'-' if kt is None else kt} | {n_div}/{n_all} |")
    print()
    for p in params:
        print(f"{p}: validation loss after training, mean over {len(seeds)} seed(s) (div. = diverged in a seed; "
              "* = best of the column)")
        print()
        print("| log2 LR | " + " | ".join(f"width {w}" for w in widths) + " |")
        print("|---:|" + "---:|" * len(widths))
        for lr in log2_lrs:
            cells = []
            for w in widths:
                star = "*" if summary[p][w]["best"] == lr else ""
                cells.append(fmt(val[(p, w, lr)]) + star)
            print(f"| {lr} | " + " | ".join(cells) + " |")
        print()
    mults = {}
    for r in results:
        if r["parametrization"] != "SP" and r["lr_multipliers"]:
            mults[r["width"]] = r["lr_multipliers"]
    if mults:
        print("muP per-group AdamW LR / base LR at the end of training (check): "
              + "; ".join(f"width {w}: {mults[w]}" for w in sorted(mults)))
        print()

    w0, w1 = widths[0], widths[-1]
    shifts = {}
    for p in params:
        b0, b1 = summary[p][w0]["best"], summary[p][w1]["best"]
        bests = [summary[p][w]["best"] for w in widths]
        grid_shift = None if b0 is None or b1 is None else b1 - b0
        spread = None if None in bests else max(bests) - min(bests)
        vertex_shift = summary[p][w1]["vertex"] - summary[p][w0]["vertex"]
        shifts[p] = (grid_shift, spread, vertex_shift)
        print(f"- {p}: best log2 LR {' -> '.join('-' if b is None else str(b) for b in bests)} over widths "
              f"{' -> '.join(map(str, widths))}: shift {w0} -> {w1} = "
              f"{'n/a' if grid_shift is None else f'{grid_shift:+d}'} grid step(s) (interpolated "
              f"{vertex_shift:+.2f}), spread over all widths {'n/a' if spread is None else spread}")
    for p in params:
        if p == "SP":
            sp_g, _, sp_v = shifts["SP"]
            drifts = sp_g is not None and abs(sp_v) >= 1.0 and sp_g != 0
            direction = "" if sp_g is None or sp_g == 0 else (" (towards smaller LRs)" if sp_g < 0 else
                                                              " (towards larger LRs)")
            print(f"- SP best LR drifts with width (moves >= 1 grid step, interpolated too): "
                  f"{'yes' if drifts else 'no'}{direction}")
        else:
            spread = shifts[p][1]
            ok = spread is not None and spread <= 1
            print(f"- {p} best LR moves by at most one grid step across widths: {'PASS' if ok else 'MISSED'}")
    return summary


def plot(results: list[dict], params: list[str], widths: list[int], log2_lrs: list[int], summary: dict, path: Path,
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = grid(results, "val_loss")
    finite = [v for v in val.values() if math.isfinite(v)]
    low = min(finite) if finite else 0.0
    top = min(max(finite) if finite else DIVERGED, low + 1.2)  # clip the low-LR tail so the minima are visible
    span = top - low
    fig, axes = plt.subplots(1, len(params), figsize=(max(7.0, 5.0 * len(params)), 4.2), sharey=True, squeeze=False)
    axes = axes[0]
    colors = plt.get_cmap("viridis")([i / max(1, len(widths) - 1) * 0.9 for i in range(len(widths))])
    for ax, p in zip(axes, params):
        for w, c in zip(widths, colors):
            ys = [val[(p, w, lr)] for lr in log2_lrs]
            shown = [min(y, top + 0.04 * span) if math.isfinite(y) else math.nan for y in ys]
            inside = [i for i, y in enumerate(ys) if math.isfinite(y) and y <= top]
            ax.plot(log2_lrs, shown, color=c, marker="o", ms=4, lw=1.6, markevery=inside, label=f"width {w}")
            clipped = [(lr, top + 0.04 * span) for lr, y in zip(log2_lrs, ys) if not math.isfinite(y) or y > top]
            if clipped:
                ax.plot(*zip(*clipped), ls="none", marker="x", ms=7, mew=1.6, color=c, clip_on=False)
            b = summary[p][w]["best"]
            if b is not None:
                ax.plot([b], [val[(p, w, b)]], marker="*", ms=14, color=c, mec="black", mew=0.6, zorder=5)
        ax.set_title(TITLES[p])
        ax.set_xlabel("log2 learning rate (base LR under muP)")
        ax.set_xticks(log2_lrs)
        ax.set_ylim(low - 0.05 * span, top + 0.06 * span)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (nats/byte)")
    axes[-1].legend(loc="upper center", fontsize=8, frameon=False)
    fig.text(0.5, 0.005, "* best LR of a width; x = diverged (or above the axes), drawn at the top", ha="center",
             fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: widths 32 64 128, log2 LR -10 -8 -6, 1 seed, 30 steps (~1 minute)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="d_model values (default 64 128 256)")
    parser.add_argument("--log2-lr", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="log2 LR grid, inclusive, in steps of 1 (default -12 -4)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 200)")
    parser.add_argument("--parametrizations", nargs="+", choices=PARAMETRIZATIONS, default=None,
                        help="what to train (default: SP muP; muP-init is the variant with an SP-like readout init)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="where to save the figure (default benchmarks/mup_transfer.png; --quick: temp dir)")
    parser.add_argument("--save-json", type=Path, default=None, help="also write every run's result to this file")
    parser.add_argument("--load-json", type=Path, default=None,
                        help="report and plot the runs saved by --save-json instead of training")
    args = parser.parse_args(argv)
    widths = sorted(args.widths or ([32, 64, 128] if args.quick else [64, 128, 256]))
    low, high = args.log2_lr or ((-10, -6) if args.quick else (-12, -4))
    log2_lrs = list(range(low, high + 1, 2 if args.quick and args.log2_lr is None else 1))
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 2)))
    steps = args.steps or (30 if args.quick else 200)
    warmup = max(1, round(WARMUP_FRACTION * steps))
    params = [p for p in PARAMETRIZATIONS if p in (args.parametrizations or DEFAULT_PARAMETRIZATIONS)]
    plot_path = args.plot or (Path(tempfile.gettempdir()) / "mup_transfer_quick.png" if args.quick else DEFAULT_PLOT)

    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    if args.load_json:
        saved = json.loads(args.load_json.read_text())
        results, elapsed = saved["results"], saved["elapsed_s"]
        widths, log2_lrs, seeds, steps = saved["widths"], saved["log2_lrs"], saved["seeds"], saved["steps"]
        warmup, load_before = saved["warmup"], saved.get("load_before", math.nan)
        args.workers, args.threads = saved.get("workers", args.workers), saved.get("threads", args.threads)
        params = [p for p in PARAMETRIZATIONS if any(r["parametrization"] == p for r in results)]
    else:
        jobs = [dict(parametrization=p, width=w, log2_lr=lr, lr=2.0**lr, seed=s, steps=steps, warmup=warmup)
                for w in sorted(widths, reverse=True) for s in seeds for lr in log2_lrs for p in params]
        print(f"{len(jobs)} runs ({' + '.join(params)} x widths {widths} x log2 LR {log2_lrs} "
              f"x {len(seeds)} seed(s)), {steps} steps each, on {args.workers} worker(s)", flush=True)
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        import multiprocessing

        results = []
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(args.threads,)) as pool:
            futures = [pool.submit(train_one, job) for job in jobs]  # largest widths first: balances the workers
            try:
                for future in as_completed(futures):
                    r = future.result()
                    results.append(r)
                    print(f"[{len(results):3d}/{len(jobs)} {time.perf_counter() - t_start:6.0f} s] "
                          f"{r['parametrization']:8s} width {r['width']:4d} log2 lr {r['log2_lr']:+3d} "
                          f"seed {r['seed']}: val {fmt(r['val_loss'])} train(last {TRAIN_TAIL}) {fmt(r['train_tail'])} "
                          f"({r['seconds']:.0f} s)", flush=True)
            except BaseException:  # Ctrl-C or a failed run: do not wait for the queued runs
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        elapsed = time.perf_counter() - t_start
        if args.save_json:
            args.save_json.write_text(json.dumps({
                "results": results, "elapsed_s": elapsed, "widths": widths, "log2_lrs": log2_lrs, "seeds": seeds,
                "steps": steps, "warmup": warmup, "load_before": load_before, "workers": args.workers,
                "threads": args.threads}, indent=1))

    info = results[0]
    run_s = sum(r["seconds"] for r in results)
    cpu_s = sum(r.get("cpu_seconds", math.nan) for r in results)
    print()
    print(f"torch {info['torch']}, lightning {info['lightning']}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs ({platform.machine()}), {args.workers} worker(s) x {args.threads} thread(s); "
          f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"TinyGPT {MODEL}, batch {DATA['batch_size']} x {DATA['seq_len']} bytes, {steps} steps (LR warm-up "
          f"{warmup} steps, then constant), AdamW wd 0; muP base width {BASE_WIDTH}; {len(results)} runs in "
          f"{elapsed:.0f} s wall ({elapsed / 60:.1f} min)")
    print(f"runs' own time summed: {run_s:.0f} s wall, {cpu_s:.0f} s CPU (CPU / {args.workers} workers = "
          f"{cpu_s / args.workers / 60:.1f} min: about the wall time on an otherwise idle machine, plus start-up)")
    print()
    summary = report(results, params, widths, log2_lrs, seeds)
    title = (f"TinyGPT (n_layer={MODEL['n_layer']}) on stdlib bytes, {steps} steps of {DATA['batch_size']}x"
             f"{DATA['seq_len']}, AdamW, mean of {len(seeds)} seed(s)")
    plot(results, params, widths, log2_lrs, summary, plot_path, title)
    shown = plot_path.resolve()
    print(f"\nplot: {shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
