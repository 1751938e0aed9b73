"""Forecast the final loss of each run from its first 30% (`lightning_scaling.curves.forecast`), leave one run out.

    python benchmarks/forecast.py [--fraction 0.3] [--confidence 0.8] [--gemstones DIR] [--synthetic-seeds 5]

Suites:
- **gemstones-hot / gemstones-cooldown** (`../shared/data/gemstones/`, skipped when absent): 20 models with both
  files. A run is its main curve at a constant learning rate after warmup (`hot.jsonl`, a checkpoint every ~10B
  tokens) and its cooldown branches (`cooldown.jsonl`: from each checkpoint, ~10% more tokens with the learning rate
  decayed to zero). Schedules as far as the data tell: the learning rate is taken as 1 from step 1 (warmup length
  unknown; a rescaling of the learning rate is absorbed into A and C) and each cooldown a linear decay to zero from
  the checkpoint step (step / 1.1) to its own last step. Forecast targets: the main curve's last checkpoint (hot)
  and the longest cooldown branch (cooldown), each from what was trained by 30% of that target's tokens: the main
  curve's checkpoints and the cooldown branches ended by then.
- **tinygpt (demo family)**: 10 runs of the demo's model family and learning-rate settings trained here (sizes
  d_model 16-64, 250-900 steps), validated every 25 steps; the target is the last validation, at the end.
- **synthetic**: runs drawn from a known annealing law per size (L0, A, C depending on the size; alpha 0.5;
  momentum 0.99) under the project's schedules (Power with warmup and decay, WSD, cosine, constant), 0.3% noise,
  logged every 10 steps; forecast from the first 30% of the steps.

For each run the forecast uses the other runs of its suite as the pool (`forecast(target, pool)`); MAPE is the mean
absolute relative error of the final loss, coverage the share of runs whose final loss lies in the interval. Also
times the shared fit over 20 runs x 100 points.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lightning_scaling.curves import AnnealingLaw, Curve, Forecaster, fit_shared, forecast, schedule_areas  # noqa: E402

GEMSTONES = REPO.parent / "shared" / "data" / "gemstones"
COOLDOWN_SHARE = 1.1  # a cooldown branch's tokens over its checkpoint's


def _read(path: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = collections.OrderedDict()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            runs.setdefault(row["run_name"], []).append(row)
    return runs


def gemstones_runs(folder: Path) -> dict[str, list[Curve]]:
    """run name -> [main curve, cooldown branches...] (module docstring)."""
    hot, cool = _read(folder / "hot.jsonl"), _read(folder / "cooldown.jsonl")
    out = {}
    for name in hot:
        if name not in cool:
            continue
        rows = hot[name]
        steps = np.array([r["step"] for r in rows], float)
        N = float(rows[0]["params_active_precise"])
        curves = [Curve(name, steps, np.ones_like(steps), np.array([r["final_loss"] for r in rows]),
                        tokens=np.array([r["tokens"] for r in rows], float), params=N)]
        for r in cool[name]:
            end = float(r["step"])
            start = float(round(end / COOLDOWN_SHARE))
            curves.append(Curve(name, np.array([1.0, start, end]), np.array([1.0, 1.0, 0.0]),
                                np.array([np.nan, np.nan, r["final_loss"]]),
                                tokens=np.array([np.nan, r["tokens"] / COOLDOWN_SHARE, r["tokens"]]), params=N))
        out[name] = curves
    return out


def gemstones_targets(curves: list[Curve], fraction: float):
    """(suite, the run as known at `fraction` of the target's steps, the target's final loss) for the hot and the
    cooldown target: the main curve up to then, the cooldown branches ended by then, the target's schedule."""
    main, branches = curves[0], curves[1:]
    for suite, end in (("gemstones-hot", main), ("gemstones-cooldown", max(branches, key=lambda c: c.final_step))):
        cut = fraction * end.final_step * (1 + 1e-9)
        known = [main.until(cut)] + [b for b in branches if b.final_step <= cut and b is not end]
        if end is not main:
            known.append(end.until(cut))
        yield suite, known, float(end.loss[-1])


SCHEDULES = ("power", "wsd", "cosine", "constant")
TOKENS_PER_STEP = 1024  # of the synthetic runs; their N is 1e6 times their size


def schedule(name: str, T: int, peak: float = 3e-3, warmup: int = 50) -> np.ndarray:
    s = np.arange(1, T + 1, dtype=float)
    w = np.minimum(1.0, s / warmup)
    if name == "constant":
        return peak * w
    if name == "cosine":
        return peak * w * 0.5 * (1 + np.cos(np.pi * np.clip((s - warmup) / (T - warmup), 0, 1)))
    if name == "wsd":
        return peak * w * np.clip((T - s) / (0.2 * T), 0, 1)
    if name == "power":
        tail = np.where(s > 0.9 * T, (np.exp(-5 * (s - 0.9 * T) / (0.1 * T)) - np.exp(-5)) / (1 - np.exp(-5)), 1.0)
        return w * np.minimum(peak, 0.05 * s ** -0.51) * tail
    raise ValueError(name)


def synthetic_runs(seed: int, n_runs: int = 12, every: int = 10, noise: float = 0.003) -> dict[str, list[Curve]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_runs):
        size = 10 ** rng.uniform(0, 1.5)  # a tenfold-and-more range of sizes
        T = int(rng.choice([1000, 2000, 3000]))
        name = SCHEDULES[i % len(SCHEDULES)]
        law = AnnealingLaw(L0=2.0 + 1.5 / size ** 0.3, A=1.2 * size ** -0.1, C=0.25 * size ** -0.1, alpha=0.5,
                           momentum=0.99)
        steps = np.arange(1, T + 1, dtype=float)
        lr = schedule(name, T)
        S1, S2 = schedule_areas(steps, lr, law.momentum)
        loss = law.loss(S1, S2) * np.exp(rng.normal(0.0, noise, T))
        at = np.arange(every, T + 1, every) - 1
        out[f"s{seed}-{i}-{name}"] = [Curve(f"s{seed}-{i}-{name}", steps[at], lr[at], loss[at],
                                            tokens=TOKENS_PER_STEP * steps[at], params=1e6 * size)]
    return out


TINYGPT = [(16, 600), (24, 400), (32, 300), (32, 600), (48, 300), (48, 500), (64, 250), (64, 400), (24, 700),
           (16, 900)]  # (d_model, steps): a spread of sizes and lengths around the demo's


def tinygpt_runs(runs=TINYGPT, every: int = 25) -> dict[str, list[Curve]]:
    """The demo's model family trained here: TinyGPT (2 layers, d_head 16, seq 64, batch 16) with the demo's
    PowerLR settings (warmup 20,000 tokens, exponential decay over the last 10%), validated every `every` steps
    on 4 batches; the curve is each validation's loss with the base learning rate at every step."""
    import lightning.pytorch as pl
    import torch

    from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
    from lightning_scaling.callbacks import PowerLR
    from lightning_scaling.plugins.builtin import gpt_non_embedding_params

    torch.set_num_threads(1)

    class Recorder(pl.Callback):
        def __init__(self):
            self.lr, self.val = {}, {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.lr[trainer.global_step] = power.lr

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.val[trainer.global_step] = float(trainer.callback_metrics["val_loss"])

    out = {}
    for d, steps in runs:
        pl.seed_everything(0, verbose=False)
        model = TinyGPT(d_model=d, n_layer=2, n_head=d // 16, seq_len=64, lr=0.0078)
        power = PowerLR(a=4.0, b=-0.51, lr_max=0.0078, warmup_tokens=20000, decay_fraction=0.1)
        rec = Recorder()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, callbacks=[power, rec],
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             val_check_interval=every, limit_val_batches=4, num_sanity_val_steps=0)
        trainer.fit(model, ByteCorpusDataModule(seq_len=64, batch_size=16, max_bytes=4_000_000, seed=0,
                                                val_windows=64))
        lr_steps = np.array(sorted(rec.lr), float)
        lr = np.array([rec.lr[s] for s in sorted(rec.lr)])
        val_steps = np.array(sorted(rec.val), float)
        steps_all = np.union1d(lr_steps, val_steps)
        loss = np.full(len(steps_all), np.nan)
        loss[np.searchsorted(steps_all, val_steps)] = [rec.val[s] for s in sorted(rec.val)]
        name = f"d{d}-s{steps}"
        out[name] = [Curve(name, steps_all, np.interp(steps_all, lr_steps, lr), loss, tokens=16 * 64 * steps_all,
                           params=float(gpt_non_embedding_params(d, 2)))]
    return out


def tinygpt_targets(curves, fraction):
    (c,) = curves
    yield "tinygpt (demo family)", [c.until(fraction * c.final_step)], float(c.loss[c.observed][-1])


def store_runs(uri: str, experiment: str) -> dict[str, list[Curve]]:
    """The runs of an MLflow experiment (`make demo`'s, say) as the callback reads them: each run's validation
    curve with its learning rate, tokens and N (`MLflowRunStore.curves`), named by run name."""
    from lightning_scaling.integrations.mlflow_store import MLflowRunStore

    store = MLflowRunStore(uri, experiment_name=experiment)
    selection = store.select()
    names = {r.run_id: r.run_name or r.run_id for r in selection.used}
    return {names.get(c.run, c.run): [c] for c in store.curves(selection, max_runs=1000, stopped=False)}


def store_targets(curves, fraction):
    (c,) = curves
    yield "demo store", [c.until(fraction * c.final_step)], float(c.loss[c.observed][-1])


def evaluate(runs: dict[str, list[Curve]], targets, fraction: float, confidence: float):
    """Leave one run out: rows of (suite, run, forecast, low, high, truth, seconds, method, weight of the law
    across runs (NaN where it was not stacked))."""
    rows = []
    for name, curves in runs.items():
        pool = [c for other, cs in runs.items() if other != name for c in cs]
        for suite, target, truth in targets(curves, fraction):
            t0 = time.perf_counter()
            fc = forecast(target, pool, confidence=confidence)
            rows.append((suite, name, *fc.final, truth, time.perf_counter() - t0, fc.method,
                         fc.across.weight if fc.across is not None else float("nan")))
    return rows


def synthetic_targets(curves, fraction):
    (c,) = curves
    truth = float(c.loss[-1])
    yield "synthetic-" + c.run.rsplit("-", 1)[1], [c.until(fraction * c.final_step)], truth


def table(rows) -> list[dict]:
    out = []
    for suite in dict.fromkeys(r[0] for r in rows):
        rs = [r for r in rows if r[0] == suite]
        err = np.array([r[2] / r[5] - 1 for r in rs])
        covered = np.array([r[3] <= r[5] <= r[4] for r in rs])
        width = np.array([(r[4] - r[3]) / r[2] for r in rs])
        out.append({"suite": suite, "runs": len(rs), "MAPE %": 100 * np.mean(np.abs(err)),
                    "max |err| %": 100 * np.max(np.abs(err)), "coverage %": 100 * covered.mean(),
                    "median width %": 100 * np.median(width), "median s": float(np.median([r[6] for r in rs])),
                    "method": rs[0][7].split(" over ")[0],
                    "law weight": float(np.nanmedian([r[8] for r in rs])) if any(np.isfinite(r[8]) for r in rs)
                    else float("nan")})
    return out


def fit_timing(repeats: int = 3) -> float:
    """Median seconds of the shared fit over 20 runs x 100 observed points."""
    rng = np.random.default_rng(7)
    curves = []
    for i in range(20):
        T = 1000
        lr = schedule(SCHEDULES[i % 4], T)
        steps = np.arange(1, T + 1, dtype=float)
        law = AnnealingLaw(2.5, 1.0 + 0.1 * i, 0.2, 0.5, 0.99)
        S1, S2 = schedule_areas(steps, lr, 0.99)
        loss = law.loss(S1, S2) * np.exp(rng.normal(0, 0.003, T))
        at = np.arange(10, T + 1, 10) - 1
        curves.append(Curve(f"r{i}", steps[at], lr[at], loss[at]))
    times = []
    for _ in range(repeats):
        fresh = [Curve(c.run, c.steps, c.lr, c.loss) for c in curves]  # areas not cached
        t0 = time.perf_counter()
        fit_shared(fresh)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def callback_overhead(repeats: int = 3, steps: int = 300, pool_runs: int = 20) -> dict:
    """The demo's model (TinyGPT d_model 64, 2 layers, seq 64, batch 16, PowerLR) trained `steps` steps with and
    without `LossForecast` (validation every 25 steps, 2 batches, in both), alternating, `repeats` times each;
    the forecaster's pool is `pool_runs` synthetic curves (the callback's own read of the store is left out: it
    happens once, before training). Returns medians: seconds per run of each, their ratio (noisy on a shared
    machine), the seconds per forecast, and the share of the run spent inside the callback's hooks (timed)."""
    import lightning.pytorch as pl
    import torch

    from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
    from lightning_scaling.callbacks import LossForecast, PowerLR

    torch.set_num_threads(1)
    pool = [c for cs in synthetic_runs(11, n_runs=pool_runs).values() for c in cs]

    class Pooled(LossForecast):
        """The callback with its pool given, and the time inside its per-step and per-validation hooks."""

        in_hooks = 0.0

        def on_train_start(self, trainer, pl_module):
            self.forecaster = Forecaster(pool, confidence=self.confidence)

        def on_train_batch_end(self, *args):
            t0 = time.perf_counter()
            super().on_train_batch_end(*args)
            self.in_hooks += time.perf_counter() - t0

        def on_validation_end(self, *args):
            t0 = time.perf_counter()
            super().on_validation_end(*args)
            self.in_hooks += time.perf_counter() - t0

    def once(with_forecast: bool):
        pl.seed_everything(0, verbose=False)
        model = TinyGPT(d_model=64, n_layer=2, n_head=4, seq_len=64, lr=3e-3)
        callbacks = [PowerLR(lr_max=3e-3, warmup_tokens=20000)] + ([Pooled()] if with_forecast else [])
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, callbacks=callbacks,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                             val_check_interval=25, limit_val_batches=2, num_sanity_val_steps=0)
        dm = ByteCorpusDataModule(seq_len=64, batch_size=16, max_bytes=2_000_000, seed=0, val_windows=32)
        t0 = time.perf_counter()
        trainer.fit(model, dm)
        seconds = time.perf_counter() - t0
        return seconds, (callbacks[-1].seconds if with_forecast else []), \
            (callbacks[-1].in_hooks / seconds if with_forecast else 0.0)

    plain, watched, per, share = [], [], [], []
    for i in range(repeats):
        for flag in ((False, True) if i % 2 == 0 else (True, False)):
            seconds, forecasts, in_hooks = once(flag)
            (watched if flag else plain).append(seconds)
            per += forecasts
            if flag:
                share.append(in_hooks)
    return {"plain s": float(np.median(plain)), "with LossForecast s": float(np.median(watched)),
            "ratio": float(np.median(watched) / np.median(plain)), "forecasts": len(per),
            "median s per forecast": float(np.median(per)) if per else float("nan"),
            "in-hook share of the run": float(np.median(share))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--confidence", type=float, default=0.8)
    parser.add_argument("--gemstones", type=Path, default=GEMSTONES)
    parser.add_argument("--synthetic-seeds", type=int, default=3)
    parser.add_argument("--tinygpt", action=argparse.BooleanOptionalAction, default=True,
                        help="train the demo-family runs here (about 3 CPU-minutes)")
    parser.add_argument("--tracking-uri", default=None, help="also forecast the runs of this MLflow store (with "
                        "--experiment; e.g. the demo's sqlite:///mlflow.db and tiny-gpt-demo)")
    parser.add_argument("--experiment", default="tiny-gpt-demo")
    parser.add_argument("--overhead-repeats", type=int, default=3, help="0: skip the callback overhead")
    parser.add_argument("--only-overhead", action="store_true", help="skip the forecast suites")
    args = parser.parse_args(argv)
    rows = []
    if args.only_overhead:
        over = callback_overhead(args.overhead_repeats)
        print(", ".join(f"{k} {v:.4g}" for k, v in over.items()))
        return 0
    if (args.gemstones / "hot.jsonl").is_file():
        rows += evaluate(gemstones_runs(args.gemstones), gemstones_targets, args.fraction, args.confidence)
    else:
        print(f"gemstones: skipped ({args.gemstones} not found)")
    for seed in range(args.synthetic_seeds):
        rows += evaluate(synthetic_runs(seed), synthetic_targets, args.fraction, args.confidence)
    if args.tinygpt:
        rows += evaluate(tinygpt_runs(), tinygpt_targets, args.fraction, args.confidence)
    if args.tracking_uri:
        rows += evaluate(store_runs(args.tracking_uri, args.experiment), store_targets, args.fraction,
                         args.confidence)
    print(f"forecast of the final loss from the first {args.fraction:.0%}, {args.confidence:.0%} interval, "
          "leave one run out")
    print(f"{'suite':22s} {'runs':>4s} {'MAPE %':>7s} {'max %':>6s} {'cover %':>7s} {'width %':>7s} {'s':>6s} "
          f"{'law w':>5s}  method")
    for r in table(rows):
        print(f"{r['suite']:22s} {r['runs']:4d} {r['MAPE %']:7.3f} {r['max |err| %']:6.2f} {r['coverage %']:7.1f} "
              f"{r['median width %']:7.2f} {r['median s']:6.3f} {r['law weight']:5.2f}  {r['method']}")
    print(f"shared fit, 20 runs x 100 points: {fit_timing():.2f} s (median of 3)")
    if args.overhead_repeats:
        over = callback_overhead(args.overhead_repeats)
        print("LossForecast on the demo's model, 300 steps, validation every 25: "
              + ", ".join(f"{k} {v:.4g}" for k, v in over.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
