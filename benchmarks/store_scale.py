"""Store scale: the closing hook over an experiment of 100, 1,000 and 2,500 runs.

Seeds an MLflow experiment through the MLflow client with finished runs in the `ScalingTracker` schema (the
metrics `scaling/tokens`, `scaling/flops`, `scaling/params_avg`, `val_loss` with a short loss history, the params
and tags the tracker writes), drawn from isoFLOP groups of Chinchilla's published law with 0.5% noise, then times
`ScalingLawAdvisor.advise` as the closing hook runs it: read every run (every page of `search_runs`, 1,000 runs a
page), select, fit, choose the law form, calibrate, bootstrap (1,000 replicates), publish (note, tags,
recommendation.json and both figures, on the run and on the summary run). Each size is timed `--repeats` times
(median quoted), with the time split into read / fit+bootstrap / publish.

    python benchmarks/store_scale.py                                 # sqlite file store in a temporary folder
    python benchmarks/store_scale.py --server                        # an `mlflow server` over that sqlite file
    python benchmarks/store_scale.py --server --postgres             # an `mlflow server` on PostgreSQL
    python benchmarks/store_scale.py --sizes 100 1000 2500 --repeats 3

Target (issue 13): <= 15 s for the whole hook at 2,500 runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from lightning_scaling.callbacks import ScalingLawAdvisor  # noqa: E402
from lightning_scaling.integrations import MLflowRunStore, mlflow_store  # noqa: E402
from lightning_scaling.law import CHINCHILLA_PAPER_LAW as LAW  # noqa: E402
from lightning_scaling.law import optimal_allocation  # noqa: E402
from lightning_scaling.runs import schema  # noqa: E402

HISTORY = 4  # validation points per seeded run


def seeded_run(client, experiment_id: str, i: int, rng) -> str:
    """One finished run as ScalingTracker and the MLflow logger leave it."""
    budget = 10 ** rng.uniform(17, 21)
    n_opt, _, _ = optimal_allocation(LAW.E, LAW.A, LAW.B, LAW.alpha, LAW.beta, budget)
    N = float(n_opt) * 4 ** rng.uniform(-1, 1)
    D = budget / (6 * N)
    final = float(LAW.loss(N, D)) * float(np.exp(rng.normal(0, 0.005)))
    run = client.create_run(experiment_id, run_name=f"seed-{i}", tags={schema.SCHEMA_TAG: schema.SCHEMA_VERSION})
    now = int(time.time() * 1000)
    metrics = [Metric(schema.TOKENS, D, now, 100), Metric(schema.FLOPS, 1.05 * budget, now, 100),
               Metric(schema.PARAMS_AVG, N, now, 100), Metric(schema.PARAMS_NONZERO, N, now, 100),
               Metric(schema.SPARSITY, 0.0, now, 100)]
    metrics += [Metric("val_loss", final * (1 + 0.3 / (k + 1) - 0.3 / HISTORY), now, 25 * (k + 1))
                for k in range(HISTORY)]
    params = [Param(schema.params_count_key("non_embedding"), str(int(N))), Param(schema.PARAMS_BASIS, "non_embedding")]
    tags = [RunTag(schema.COMPLETE_TAG, "true"), RunTag(schema.BEST_TAG, json.dumps({"val_loss": final}))]
    client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
    # ended an hour ago: the experiment's history, not runs finishing together with the one whose hook is timed
    client.set_terminated(run.info.run_id, "FINISHED", end_time=now - 3_600_000)
    return run.info.run_id


class Timed(MLflowRunStore):
    """The run store with its reading and publishing timed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = self.publishing = 0.0
        self.pages = 0

    def runs(self, filter_string=""):
        original = self.client.search_runs

        def counted(*a, **k):
            self.pages += 1
            return original(*a, **k)

        self.client.search_runs = counted
        try:
            return super().runs(filter_string)
        finally:
            self.client.search_runs = original

    def select(self, current_run_id=None):
        t = time.perf_counter()
        try:
            return super().select(current_run_id)
        finally:
            self.read += time.perf_counter() - t

    def more_usable_since(self, selection, since_ms, current_run_id=None):
        t = time.perf_counter()
        try:
            return super().more_usable_since(selection, since_ms, current_run_id)
        finally:
            self.read += time.perf_counter() - t

    def publish_everywhere(self, rec, run_ids=(), force=False):
        t = time.perf_counter()
        try:
            return super().publish_everywhere(rec, run_ids, force)
        finally:
            self.publishing += time.perf_counter() - t


@contextlib.contextmanager
def tracking_uri(args, tmp: Path):
    sqlite = f"sqlite:///{tmp / 'mlflow.db'}"
    if not args.server:
        yield sqlite
        return
    from servers import mlflow_on, postgres

    if args.postgres:
        with postgres() as database, mlflow_on(tmp, database, workers=2) as uri:
            yield uri
    else:
        with mlflow_on(tmp, sqlite, workers=2) as uri:
            yield uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 2500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--server", action="store_true", help="through an `mlflow server` (HTTP)")
    parser.add_argument("--postgres", action="store_true", help="the server on PostgreSQL (with --server)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tracking_uri(args, Path(tmp)) as uri:
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("scale")
        seeded = 0
        started = time.perf_counter()
        for size in sorted(args.sizes):
            while seeded < size:
                last = seeded_run(client, experiment_id, seeded, rng)
                seeded += 1
            seeding = time.perf_counter() - started
            totals, parts = [], []
            for _ in range(args.repeats):
                store = Timed(uri, experiment_id=experiment_id)
                advisor = ScalingLawAdvisor(bootstrap=args.bootstrap)
                t = time.perf_counter()
                rec = advisor.advise(store, last)
                totals.append(time.perf_counter() - t)
                parts.append((store.read, totals[-1] - store.read - store.publishing, store.publishing, store.pages))
            i = int(np.argsort(totals)[len(totals) // 2])
            rows.append((size, statistics.median(totals), *parts[i], rec["n_runs"], rec["status"], seeding))
            print(f"{size} runs: {statistics.median(totals):.2f} s (seeded in {seeding:.0f} s so far)", flush=True)
    backend = ("mlflow server on PostgreSQL" if args.postgres else "mlflow server on sqlite") if args.server \
        else "sqlite file store"
    print(f"\nmlflow {mlflow.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"1-min load average {os.getloadavg()[0]:.1f}; {backend}; bootstrap {args.bootstrap}; "
          f"median of {args.repeats}; search_runs page size {mlflow_store.PAGE_SIZE}\n")
    print("| runs | closing hook (s) | read (s) | fit + bootstrap (s) | publish (s) | search_runs pages | runs fitted "
          "| status | target <= 15 s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for size, total, read, fit, publish, pages, n_runs, status, _ in rows:
        verdict = ("met" if total <= 15 else "MISSED") if size >= 2500 else "-"
        print(f"| {size} | {total:.2f} | {read:.2f} | {fit:.2f} | {publish:.2f} | {pages} | {n_runs} | {status} "
              f"| {verdict} |")


if __name__ == "__main__":
    main()
