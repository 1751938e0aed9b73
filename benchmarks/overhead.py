"""Callback overhead on the example transformer: step time and memory, side by side in one run.

Four configurations train the example TinyGPT (d_model=128, n_layer=4, n_head=4, seq_len=128: 875,264 parameters,
786,432 of them in the 16 prunable Linear weights) on the embedded stdlib byte corpus, batch 16 x 128, on the CPU:

    plain           Lightning alone
    all three       ScalingTracker + PowerLR + GradualPruning
    GradualPruning  GradualPruning alone
    ModelPruning    Lightning's ModelPruning("l1_unstructured"), same sparsity, same 16 weights, per layer

Interleaving. A round starts the four configurations as four processes (so each peak RSS is its own) that take
turns step by step: a process runs one optimizer step, hands a token to the next one and waits for its turn, so the
four see the machine's load within about a second of each other, and a burst of load from elsewhere hits them
alike. The order of the turn is rotated every round. Every process trains `warmup + steps + 1` steps from the same
seed and the same data.

Step time. A timing callback, first in the callback list, takes `time.perf_counter()` when a batch's hooks begin (the
end of the previous step) and again when its turn comes (the start of this step); a step's time runs from its start
to the next batch's arrival, so it contains the whole step: every callback's batch hooks, forward, backward, the
optimizer step (with GradualPruning's optimizer step post-hook) and fetching the next batch, but not the wait for
the other processes. The first `warmup` steps are dropped (the tracker's one-off FLOP measurement and Adam's state
allocation fall there). The report gives the median over all timed steps, its ratio to plain, the median of the
paired ratios (step k of a configuration over step k of plain in the same round, taken about a second apart), and
the time spent inside the benchmarked callbacks' hooks (GradualPruning's optimizer step post-hook, where it
updates masks and multiplies the weights by them, counts as one of its hooks). `log_every_n_steps` is 10 here
(`--log-every-n-steps`): the run clock syncs and ScalingTracker logs at steps 20, 30, 40 and 50 of the timed window.

Pruning is active during the timed steps. GradualPruning runs its cubic schedule from the first step
(`start_fraction=0`) and reaches `--sparsity` at half the run (`end_fraction=0.5`), with masks recomputed every 10
steps (the default): the timed steps see the last mask updates of the ramp and then the held final masks, with
sparsity > 0 throughout. ModelPruning is built with `apply_pruning=False` (so its epoch-end hook never prunes) and
a small callback calls its public `apply_pruning(amount)` once in `on_train_start`, so the final sparsity is held
from the first step; `use_lottery_ticket_hypothesis=False`, and `use_global_unstructured=False` (per layer, like
GradualPruning's default `scope="layer"`).

Memory: (a) bytes the pruning mechanism holds per prunable parameter, from the tensors it keeps (GradualPruning:
its bool masks; ModelPruning: `weight_orig` + `weight_mask` + the recomputed `weight` attribute, distinct storages,
minus the original weights), read at the end of the timed steps; (b) the peak RSS of each process
(`resource.getrusage(...).ru_maxrss`), supplementary, as a median over rounds, with its difference to plain.

DDP (`--ddp`). Two configurations, plain and all three (the same callbacks, settings and pruning schedule, the
budget counted over both ranks), each trained with `Trainer(accelerator="cpu", devices=2, strategy="ddp")` (gloo;
`use_distributed_sampler=False`: `ByteCorpusDataModule` gives rank r the items r, r + 2, ..., so each rank sees
its own batch of 16 x 128 and a step trains on 32 x 128) and `log_every_n_steps=50`, Lightning's default: the timed
steps 13 to 52 contain one logging step, 50, where the callbacks reduce their counts across the ranks (twice, each
through `strategy.reduce`: a barrier and an all-reduce of a few numbers). Every run is its own command
(`--ddp-child`; Lightning's DDP launcher starts the second rank by running that command line again), and rank 0
writes its timings to a JSON file. A round starts both runs, four processes, and rank r of one run takes
turns with rank r of the other step by step through named pipes, as on one process (both ranks of a run compute
together, then both ranks of the other); the run that goes first alternates from round to round (plain first in
odd rounds, all three first in even ones). Step times are rank 0's, taken as above (each contains DDP's gradient
all-reduce and Lightning's per-step broadcast of its SIGTERM flag, which wait for the other rank). The report
gives, for each configuration, the median step over all rounds, the ratio of the medians, the median of the
paired step ratios, the median of the per-round ratios of medians, the time inside the callbacks' hooks, and the
torch.distributed collectives called from Python in each timed step (Lightning's and the callbacks'; DDP's gradient
all-reduce runs in its C++ reducer and is not among them).

Run from the repository root:

    python benchmarks/overhead.py                # 4 rounds x 4 configurations x 40 timed steps, 5 to 9 minutes
    python benchmarks/overhead.py --quick        # smoke test, 1 round x 10 timed steps, 1 to 2 minutes
    python benchmarks/overhead.py --ddp          # DDP: 6 rounds x 2 configurations x 40 timed steps, 7 to 9 minutes
    python benchmarks/overhead.py --ddp --quick  # DDP smoke test, 2 rounds x 10 timed steps (no logging step), 2 min

One torch thread per process (`--threads`): the four processes take turns, so only one computes at a time (with
`--ddp`, the two ranks of one run, one per core), and on a small shared machine a single thread is the least
disturbed by other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root, for `examples` and an uninstalled package
CONFIGS = ("plain", "all three", "GradualPruning", "ModelPruning")
MODEL = dict(d_model=128, n_layer=4, n_head=4, seq_len=128)
DATA = dict(seq_len=128, batch_size=16, max_bytes=4_000_000)
# On a GPU (`benchmarks/gpu_check.sh`): these environment variables, which the child processes inherit, switch the
# device and precision, and OVERHEAD_MODEL=100m trains a GPT of about 100M parameters (85M non-embedding).
ACCELERATOR = os.environ.get("OVERHEAD_ACCELERATOR", "cpu")
PRECISION = os.environ.get("OVERHEAD_PRECISION", "32-true")
if os.environ.get("OVERHEAD_MODEL") == "100m":
    MODEL = dict(d_model=768, n_layer=12, n_head=12, seq_len=512)
    DATA = dict(seq_len=512, batch_size=16, max_bytes=16_000_000)
LR = 1e-3
TARGET_OVERHEAD = 0.03  # all three callbacks: <= 3% on the median step time
TARGET_BYTES = 1.2  # GradualPruning: <= 1.2 extra bytes per prunable parameter
DDP_CONFIGS = ("plain", "all three")
DDP_WORLD = 2  # processes of the DDP case
GRADUAL_STEP_HOOK = "_after_optimizer_step"  # GradualPruning's method behind its optimizer step post-hook
# collectives of torch.distributed that Lightning and the callbacks call from Python (DDP's gradient all-reduce runs
# in its C++ reducer and does not pass through these)
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
               "broadcast_object_list", "barrier", "reduce", "reduce_scatter", "gather", "scatter", "monitored_barrier")


def make_gradual(cls, n_steps: int, sparsity: float, world_size: int):
    """The benchmarked GradualPruning: cubic ramp from the first step to `sparsity` at half of the run's tokens."""
    tokens = n_steps * DATA["batch_size"] * DATA["seq_len"] * world_size  # the clock counts every rank's tokens
    return cls(final_sparsity=sparsity, start_fraction=0.0, end_fraction=0.5, update_every=10, total_tokens=tokens)


def mask_updates(targets: list[float]) -> list[int]:
    """Optimizer steps (1-based) whose post-hook changed the masks, from the target sparsity seen as each batch
    began."""
    return [k for k in range(1, len(targets)) if targets[k] != targets[k - 1]]


def logging_steps(args) -> list[int]:
    """The optimizer steps of the timed window (1-based) at which the run clock syncs and ScalingTracker logs."""
    return [s for s in range(args.warmup + 1, args.warmup + args.steps + 1) if s % args.log_every_n_steps == 0]


# ------------------------------------------------------------------------------------------------ child process
def hook_timers(seconds: dict[str, float], Callback, GradualPruning):
    """(`timed`, `time_hooks`): `timed(fn, key)` wraps `fn` so that its wall time is added to `seconds[key]`;
    `time_hooks(callback)` wraps every hook the callback overrides (and GradualPruning's optimizer step post-hook,
    where it updates masks and multiplies the weights by them), keyed by the callback's class name."""

    def timed(fn, key):
        seconds.setdefault(key, 0.0)

        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                seconds[key] += time.perf_counter() - t0

        return wrapper

    def time_hooks(callback):
        names = [name for name in dir(Callback)
                 if name.startswith("on_") and getattr(type(callback), name) is not getattr(Callback, name)]
        if isinstance(callback, GradualPruning):
            names.append(GRADUAL_STEP_HOOK)
        for name in names:
            setattr(callback, name, timed(getattr(callback, name), type(callback).__name__))
        return callback

    return timed, time_hooks


def run_child(config: str, args) -> dict:
    """Train one configuration, taking turns through the token pipes, and return its measurements."""
    import logging
    import resource
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import lightning.pytorch as pl
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import ModelPruning

    from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
    from lightning_scaling.callbacks import GradualPruning, PowerLR, ScalingTracker
    from lightning_scaling.nn import prunable_parameters

    warmup, steps, sparsity = args.warmup, args.steps, args.sparsity
    n_steps = warmup + steps + 1  # the batch after the last timed step ends it
    pl.seed_everything(0, verbose=False)
    model = TinyGPT(**MODEL, lr=LR)
    data = ByteCorpusDataModule(**DATA)
    n_params = sum(p.numel() for p in model.parameters())
    prunable = prunable_parameters(model)
    n_prunable = sum(p.numel() for p in prunable.values())
    layers = {name: model.get_submodule(name.rsplit(".", 1)[0]) for name in prunable}

    # wall time inside each benchmarked callback's hooks (for ModelPruning: its forward pre-hooks), by name
    hook_seconds: dict[str, float] = {}

    timed, time_hooks = hook_timers(hook_seconds, Callback, GradualPruning)

    def pruned_fraction() -> float:
        return sum(int((layer.weight == 0).sum()) for layer in layers.values()) / n_prunable

    def held_bytes() -> int:
        if config in ("all three", "GradualPruning"):
            return sum(m.numel() * m.element_size() for m in gradual.masks.values())
        if config == "ModelPruning":
            total = 0
            for layer in layers.values():
                storages = {}
                for attr in ("weight_orig", "weight_mask", "weight"):
                    t = getattr(layer, attr, None)
                    if isinstance(t, torch.Tensor):
                        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                total += sum(storages.values()) - layer.weight_orig.numel() * layer.weight_orig.element_size()
            return total
        return 0

    class TakeTurnsAndTime(Callback):
        def __init__(self):
            self.arrivals: list[float] = []  # batch k's hooks begin: the end of step k - 1
            self.starts: list[float] = []  # step k begins: this process's turn has come
            self.hooks: list[dict[str, float]] = []
            self.sparsity: list[float] = []
            self.targets: list[float] = []  # GradualPruning's target sparsity as each batch begins
            self.held_bytes = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if ACCELERATOR == "cuda":  # the previous step's kernels belong to the previous step
                import torch

                torch.cuda.synchronize()
            self.arrivals.append(time.perf_counter())
            k = len(self.arrivals) - 1
            if k in (warmup, warmup + steps):  # before the first and after the last timed step
                self.sparsity.append(pruned_fraction())
            if k == warmup + steps:
                self.held_bytes = held_bytes()
            os.write(args.ready_fd if k == 0 else args.next_fd, b"t")  # ready / pass the turn on
            os.read(args.turn_fd, 1)  # wait for this process's turn
            self.hooks.append(dict(hook_seconds))
            self.targets.append(gradual.sparsity)
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module):
            try:
                os.write(args.next_fd, b"t")  # the last step is done: pass the turn on for good
            except BrokenPipeError:  # the next process has finished already
                pass

    timer = TakeTurnsAndTime()
    callbacks: list = [timer]
    gradual = make_gradual(GradualPruning, n_steps, sparsity, world_size=1)
    if config == "all three":
        callbacks += [time_hooks(ScalingTracker()), time_hooks(PowerLR(lr_max=LR)), time_hooks(gradual)]
    elif config == "GradualPruning":
        callbacks += [time_hooks(gradual)]
    elif config == "ModelPruning":
        targets = [(layer, "weight") for layer in layers.values()]
        lightning_pruning = ModelPruning("l1_unstructured", parameters_to_prune=targets, amount=sparsity,
                                         use_global_unstructured=False, apply_pruning=False,
                                         use_lottery_ticket_hypothesis=False)

        class PruneAtTrainStart(Callback):
            """Prune once before the first step, and time ModelPruning's forward pre-hooks."""

            def on_train_start(self, trainer, pl_module):
                lightning_pruning.apply_pruning(sparsity)
                self.saved = []
                for layer, _ in targets:
                    for key, hook in list(layer._forward_pre_hooks.items()):
                        self.saved.append((layer, key, hook))
                        layer._forward_pre_hooks[key] = timed(hook, "ModelPruning forward pre-hooks")

            def on_train_end(self, trainer, pl_module):  # runs before ModelPruning's, which looks for its hooks
                for layer, key, hook in self.saved:
                    layer._forward_pre_hooks[key] = hook

        callbacks += [PruneAtTrainStart(), lightning_pruning]
    elif config != "plain":
        raise ValueError(config)

    trainer = pl.Trainer(
        accelerator=ACCELERATOR, precision=PRECISION, devices=1, max_steps=n_steps, logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        log_every_n_steps=args.log_every_n_steps, callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data)
    timed_steps = range(warmup, warmup + steps)
    return {
        "config": config,
        "step_ms": [1e3 * (timer.arrivals[k + 1] - timer.starts[k]) for k in timed_steps],
        "hook_ms": {key: [1e3 * (timer.hooks[k + 1][key] - timer.hooks[k][key]) for k in timed_steps]
                    for key in hook_seconds},
        "sparsity": timer.sparsity,
        "mask_updates": mask_updates(timer.targets) if config in ("all three", "GradualPruning") else [],
        "held_bytes": timer.held_bytes,
        "n_prunable": n_prunable,
        "n_params": n_params,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------------ DDP child
def run_ddp_child(config: str, args) -> None:
    """Train one configuration on DDP_WORLD processes; rank 0 writes its measurements to `args.out` (JSON).

    Lightning's DDP launcher starts the other rank by running this same command line again, with its rank in the
    environment, so every rank comes through here.
    """
    import logging
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    import lightning.pytorch as pl
    import torch.distributed as dist
    from lightning.pytorch import Callback

    from examples.tiny_gpt import ByteCorpusDataModule, TinyGPT
    from lightning_scaling.callbacks import GradualPruning, PowerLR, ScalingTracker
    from lightning_scaling.nn import prunable_parameters

    # count the collectives called from Python (outermost calls only: broadcast_object_list calls broadcast)
    calls = {"n": 0, "depth": 0}

    def counted(fn):
        def wrapper(*a, **kw):
            if calls["depth"] == 0:
                calls["n"] += 1
            calls["depth"] += 1
            try:
                return fn(*a, **kw)
            finally:
                calls["depth"] -= 1

        return wrapper

    for name in COLLECTIVES:
        if hasattr(dist, name):
            setattr(dist, name, counted(getattr(dist, name)))

    warmup, steps, sparsity = args.warmup, args.steps, args.sparsity
    n_steps = warmup + steps + 1  # the batch after the last timed step ends it
    pl.seed_everything(0, verbose=False)
    model = TinyGPT(**MODEL, lr=LR)
    data = ByteCorpusDataModule(**DATA)
    n_params = sum(p.numel() for p in model.parameters())
    prunable = prunable_parameters(model)
    n_prunable = sum(p.numel() for p in prunable.values())
    layers = [model.get_submodule(name.rsplit(".", 1)[0]) for name in prunable]

    hook_seconds: dict[str, float] = {}

    timed, time_hooks = hook_timers(hook_seconds, Callback, GradualPruning)

    def pruned_fraction() -> float:
        return sum(int((layer.weight == 0).sum()) for layer in layers) / n_prunable

    class TakeTurnsAndTime(Callback):
        """Rank r of this configuration takes turns with rank r of the other one, through named pipes."""

        def __init__(self):
            self.arrivals: list[float] = []  # batch k's hooks begin: the end of step k - 1
            self.starts: list[float] = []  # step k begins: this rank's turn has come
            self.hooks: list[dict[str, float]] = []
            self.collectives: list[int] = []
            self.targets: list[float] = []
            self.sparsity: list[float] = []
            self.fds = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.arrivals.append(time.perf_counter())
            k = len(self.arrivals) - 1
            if k in (warmup, warmup + steps):  # on every rank, so that neither waits for the other's count
                self.sparsity.append(pruned_fraction())
            if self.fds is None:  # O_RDWR: a FIFO opened so never blocks on open, and the token write never fails
                rank, slot, n = trainer.global_rank, args.slot, args.slots
                self.fds = [os.open(Path(args.turn_dir) / name, os.O_RDWR)
                            for name in (f"turn_{slot}_{rank}", f"turn_{(slot + 1) % n}_{rank}", "ready")]
            turn_fd, next_fd, ready_fd = self.fds
            os.write(ready_fd if k == 0 else next_fd, b"t")  # ready / pass the turn on
            os.read(turn_fd, 1)  # wait for this rank's turn
            self.hooks.append(dict(hook_seconds))
            self.collectives.append(calls["n"])
            self.targets.append(gradual.sparsity)
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module):
            if self.fds is not None:
                os.write(self.fds[1], b"t")  # the last step is done: pass the turn on for good

    timer = TakeTurnsAndTime()
    callbacks: list = [timer]
    gradual = make_gradual(GradualPruning, n_steps, sparsity, world_size=DDP_WORLD)
    if config == "all three":
        callbacks += [time_hooks(ScalingTracker()), time_hooks(PowerLR(lr_max=LR)), time_hooks(gradual)]
    elif config != "plain":
        raise ValueError(config)

    trainer = pl.Trainer(
        accelerator="cpu", devices=DDP_WORLD, strategy="ddp", use_distributed_sampler=False, max_steps=n_steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=args.log_every_n_steps, callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data)
    if not trainer.is_global_zero:
        return
    timed_steps = range(warmup, warmup + steps)
    result = {
        "config": config,
        "step_ms": [1e3 * (timer.arrivals[k + 1] - timer.starts[k]) for k in timed_steps],
        "hook_ms": {key: [1e3 * (timer.hooks[k + 1][key] - timer.hooks[k][key]) for k in timed_steps]
                    for key in hook_seconds},
        # collectives called from Python during each timed step, by optimizer step (1-based)
        "collectives": {k + 1: timer.collectives[k + 1] - timer.collectives[k] for k in timed_steps
                        if timer.collectives[k + 1] != timer.collectives[k]},
        "sparsity": timer.sparsity,
        "mask_updates": mask_updates(timer.targets) if config == "all three" else [],
        "n_prunable": n_prunable,
        "n_params": n_params,
        "world_size": trainer.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "threads": torch.get_num_threads(),
    }
    Path(args.out).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------ parent process
def run_round(order: tuple[str, ...], args) -> dict[str, dict]:
    """Start one process per configuration; they take turns in `order`, step by step."""
    n = len(order)
    turns = [os.pipe() for _ in order]  # turns[i]: process i waits on the read end
    ready_r, ready_w = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = str(args.threads)
    procs, outputs = [], []
    for i, config in enumerate(order):
        turn_fd, next_fd = turns[i][0], turns[(i + 1) % n][1]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--threads", str(args.threads), "--sparsity", str(args.sparsity),
               "--log-every-n-steps", str(args.log_every_n_steps), "--fds", str(turn_fd), str(next_fd), str(ready_w)]
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, pass_fds=(turn_fd, next_fd, ready_w)))
        outputs.append((out, err))
    for r, w in turns[1:]:
        os.close(r)
        os.close(w)
    os.close(turns[0][0])
    os.close(ready_w)
    try:
        for _ in order:  # every process has reached its first batch
            if not os.read(ready_r, 1):
                raise RuntimeError("a configuration's process ended before its first step")
        os.write(turns[0][1], b"t")  # the first in the order goes first
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        os.close(turns[0][1])
        os.close(ready_r)
    results = {}
    for config, code, (out, err) in zip(order, codes, outputs):
        out.seek(0)
        err.seek(0)
        if code != 0:
            sys.stderr.write(err.read())
            raise SystemExit(f"configuration {config!r} failed (exit {code})")
        results[config] = json.loads(out.read().strip().splitlines()[-1])
    return results


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp_round(order: tuple[str, ...], args) -> dict[str, dict]:
    """Start one DDP run per configuration (each its own command; Lightning starts the second rank of each from
    it); rank r of each run takes turns with rank r of the other, step by step, in `order`."""
    n = len(order)
    with tempfile.TemporaryDirectory() as tmp:
        names = [f"turn_{i}_{r}" for i in range(n) for r in range(DDP_WORLD)] + ["ready"]
        for name in names:
            os.mkfifo(Path(tmp) / name)
        fds = {name: os.open(Path(tmp) / name, os.O_RDWR) for name in names}
        procs, logs, outs = [], [], []
        try:
            for i, config in enumerate(order):
                env = dict(os.environ)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
                env["OMP_NUM_THREADS"] = str(args.threads)
                env["MASTER_ADDR"] = "127.0.0.1"
                env["MASTER_PORT"] = str(free_port())
                for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
                    env.pop(key, None)
                outs.append(Path(tmp) / f"result_{i}.json")
                cmd = [sys.executable, str(Path(__file__).resolve()), "--ddp-child", config, "--out", str(outs[-1]),
                       "--turn-dir", tmp, "--slot", str(i), "--slots", str(n), "--warmup", str(args.warmup),
                       "--steps", str(args.steps), "--threads", str(args.threads), "--sparsity", str(args.sparsity),
                       "--log-every-n-steps", str(args.log_every_n_steps)]
                logs.append(tempfile.TemporaryFile("w+"))
                # its own session, so that a failure takes its second rank down with it
                procs.append(subprocess.Popen(cmd, env=env, stdout=logs[-1], stderr=subprocess.STDOUT, cwd=ROOT,
                                              start_new_session=True))
            deadline = time.monotonic() + args.ddp_timeout
            ready = 0
            while ready < n * DDP_WORLD:  # every rank of every run has reached its first batch
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a DDP run ended before its first step")
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out before the first step")
                if select.select([fds["ready"]], [], [], 1.0)[0]:
                    ready += len(os.read(fds["ready"], n * DDP_WORLD - ready))
            for r in range(DDP_WORLD):  # the first in the order goes first
                os.write(fds[f"turn_0_{r}"], b"t")
            codes = []
            for p in procs:
                try:
                    codes.append(p.wait(timeout=max(deadline - time.monotonic(), 1)))
                except subprocess.TimeoutExpired:
                    codes.append(None)
                    break
        except RuntimeError as err:
            codes = [f"{err}"] * n
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)  # its second rank, if it is still there
                except ProcessLookupError:
                    pass
                p.wait()
            for fd in fds.values():
                os.close(fd)
        results = {}
        for config, code, log, out in zip(order, codes + [None] * (n - len(codes)), logs, outs):
            if code != 0 or not out.exists():
                log.seek(0)
                sys.stderr.write(log.read()[-8000:])
                raise SystemExit(f"DDP configuration {config!r} failed ({'timed out' if code is None else code})")
            results[config] = json.loads(out.read_text())
        return results


def describe_collectives(runs: list[dict], steps) -> str:
    """Collectives per timed step, e.g. "1 in each of 39 steps; 3 at step 50" ("1/2": differs between rounds)."""
    groups: dict[str, list[int]] = {}
    for s in steps:
        seen = sorted({run["collectives"].get(str(s), 0) for run in runs})
        groups.setdefault("/".join(map(str, seen)), []).append(s)
    parts = []
    for i, (count, where) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
        if i == 0 and len(where) > 3:
            parts.append(f"{count} in each of {len(where)} steps")
        else:
            parts.append(f"{count} at step{'s' if len(where) > 1 else ''} {', '.join(map(str, where))}")
    return "; ".join(parts)


def hook_summary(runs: list[dict]) -> tuple[list[float], str]:
    """In-hook milliseconds per timed step over all rounds, and the mean per step of each callback, as text."""
    keys = list(runs[0]["hook_ms"])
    per_step = [sum(vals) for run in runs for vals in zip(*(run["hook_ms"][k] for k in keys))]
    by_key = ", ".join(f"{k} {statistics.fmean([h for run in runs for h in run['hook_ms'][k]]):.2f}" for k in keys)
    return per_step, by_key


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def main_ddp(args) -> int:
    """The DDP case: plain DDP against DDP with all three callbacks, alternating run by run (see the docstring)."""
    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    runs: dict[str, list[dict]] = {c: [] for c in DDP_CONFIGS}
    loads = []
    for r in range(args.rounds):
        order = DDP_CONFIGS if r % 2 == 0 else DDP_CONFIGS[::-1]
        t_round = time.perf_counter()
        results = run_ddp_round(order, args)
        for config in DDP_CONFIGS:
            runs[config].append(results[config])
        loads.append(os.getloadavg()[0])
        meds = {c: median(runs[c][-1]["step_ms"]) for c in DDP_CONFIGS}
        print(f"round {r + 1}/{args.rounds} ({' first, then '.join(order)}), median step (ms): "
              + ", ".join(f"{c} {meds[c]:.1f}" for c in DDP_CONFIGS)
              + f"; ratio {meds['all three'] / meds['plain']:.3f}; {time.perf_counter() - t_round:.0f} s; "
              f"1-min load {loads[-1]:.1f}", flush=True)
    elapsed = time.perf_counter() - t_start

    info = runs["plain"][0]
    window = logging_steps(args)
    print()
    print(f"torch {info['torch']}, lightning {info['lightning']}, Python {platform.python_version()}, "
          f"{info['world_size']} DDP processes ({info['backend']}, CPU), "
          f"{info['threads']} torch thread(s) per process, "
          f"{os.cpu_count()} CPUs ({platform.machine()}), 1-min load average {load_before:.1f} before, "
          f"{min(loads):.1f} to {max(loads):.1f} after each round")
    print(f"TinyGPT {MODEL}: {info['n_params']:,} parameters, {info['n_prunable']:,} prunable; batch "
          f"{DATA['batch_size']} x {DATA['seq_len']} per process; sparsity {args.sparsity}; log_every_n_steps "
          f"{args.log_every_n_steps} (logging steps in the timed window: {window or 'none'}); {args.rounds} round(s) x "
          f"{len(DDP_CONFIGS)} configurations x {args.steps} timed steps (steps {args.warmup + 1} to "
          f"{args.warmup + args.steps}, +{args.warmup} warm-up); {elapsed:.0f} s")
    print()

    pooled = {c: [t for run in runs[c] for t in run["step_ms"]] for c in DDP_CONFIGS}
    med = {c: median(pooled[c]) for c in DDP_CONFIGS}
    round_ratios = [median(c["step_ms"]) / median(p["step_ms"]) for c, p in zip(runs["all three"], runs["plain"])]
    paired = median([t / b for run, base in zip(runs["all three"], runs["plain"])
                     for t, b in zip(run["step_ms"], base["step_ms"])])
    print("| config | median step (ms) | ratio to plain (paired) | median of per-round ratios | mean step (ms) "
          "| in-hook time per step, median / mean (ms) | mean by callback (ms/step) | collectives from Python per "
          "timed step | pruned fraction, first -> last timed step |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|")
    for c in DDP_CONFIGS:
        mean = statistics.fmean(pooled[c])
        colls_text = describe_collectives(runs[c], range(args.warmup + 1, args.warmup + args.steps + 1))
        if c == "plain":
            print(f"| {c} | {med[c]:.1f} | 1 | 1 | {mean:.1f} | - | - | {colls_text} | - |")
            continue
        per_step, by_key = hook_summary(runs[c])
        first, last = runs[c][-1]["sparsity"]
        print(f"| {c} | {med[c]:.1f} | {med[c] / med['plain']:.3f} ({paired:.3f}) | {median(round_ratios):.3f} "
              f"| {mean:.1f} "
              f"| {median(per_step):.2f} / {statistics.fmean(per_step):.2f} | {by_key} | {colls_text} "
              f"| {first:.3f} -> {last:.3f} |")
    print()
    print("per-round ratios of the medians (all three / plain): " + ", ".join(f"{x:.3f}" for x in round_ratios))
    updates = runs["all three"][-1]["mask_updates"]
    print(f"GradualPruning mask updates at steps {updates} (in the timed window: "
          f"{[u for u in updates if args.warmup < u <= args.warmup + args.steps] or 'none'})")
    for s in window:
        i = s - args.warmup - 1
        print(f"logging step {s}: median over rounds " + ", ".join(
            f"{c} {median([run['step_ms'][i] for run in runs[c]]):.1f} ms" for c in DDP_CONFIGS))
    print("In-hook time: wall time inside the callbacks' hooks (and GradualPruning's optimizer step post-hook) on "
          "rank 0. Collectives: torch.distributed calls made from Python on rank 0 (Lightning's and the callbacks'; "
          "DDP's gradient all-reduce runs in its C++ reducer and is not counted).")
    print()
    over = med["all three"] / med["plain"] - 1
    print(f"- all three callbacks add <= 3% to the median step time on {info['world_size']} DDP processes: "
          f"{over:+.1%} (paired: {paired - 1:+.1%}; median of per-round ratios: {median(round_ratios) - 1:+.1%}) -> "
          f"{verdict(over <= TARGET_OVERHEAD)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round (2 with --ddp) x 10 timed steps (1 to 2 minutes)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the configurations (default 4; 6 with --ddp)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration and round (40)")
    parser.add_argument("--warmup", type=int, default=12, help="untimed steps at the start of every run (12)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (1)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="final sparsity of both pruning methods (0.5)")
    parser.add_argument("--ddp", action="store_true",
                        help=f"the DDP case: plain against all three callbacks on {DDP_WORLD} processes (gloo)")
    parser.add_argument("--log-every-n-steps", type=int, default=None,
                        help="the Trainer's log_every_n_steps (10 on one process, 50 = Lightning's default with --ddp)")
    parser.add_argument("--ddp-timeout", type=float, default=600, help="seconds allowed per DDP round (600)")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--fds", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-child", choices=DDP_CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--turn-dir", help=argparse.SUPPRESS)
    parser.add_argument("--slot", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    ddp = args.ddp or args.ddp_child is not None
    if args.rounds is None:
        args.rounds = (2 if args.quick else 6) if ddp else (1 if args.quick else 4)
    if args.steps is None:
        args.steps = 10 if args.quick else 40
    if args.log_every_n_steps is None:
        args.log_every_n_steps = 50 if ddp else 10

    if args.child:
        args.turn_fd, args.next_fd, args.ready_fd = args.fds
        print(json.dumps(run_child(args.child, args)))
        return 0
    if args.ddp_child:
        run_ddp_child(args.ddp_child, args)
        return 0
    if args.ddp:
        return main_ddp(args)

    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[: r % len(CONFIGS)]
        results = run_round(order, args)
        for c in CONFIGS:
            runs[c].append(results[c])
        medians = ", ".join(f"{c} {median(results[c]['step_ms']):.1f}" for c in CONFIGS)
        print(f"round {r + 1}/{args.rounds}, median step (ms): {medians}", flush=True)
    elapsed = time.perf_counter() - t_start

    info = runs["plain"][0]
    print()
    print(f"torch {info['torch']}, lightning {info['lightning']}, Python {platform.python_version()}, "
          f"{info['threads']} torch thread(s) per process, {os.cpu_count()} CPUs ({platform.machine()}), "
          f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"TinyGPT {MODEL}: {info['n_params']:,} parameters, {info['n_prunable']:,} prunable; batch "
          f"{DATA['batch_size']} x {DATA['seq_len']}; sparsity {args.sparsity}; {args.rounds} round(s) x "
          f"{len(CONFIGS)} configurations x {args.steps} timed steps (+{args.warmup} warm-up); {elapsed:.0f} s")
    print()

    pooled = {c: [t for run in runs[c] for t in run["step_ms"]] for c in CONFIGS}
    med = {c: median(pooled[c]) for c in CONFIGS}
    paired = {c: median([t / p for run, base in zip(runs[c], runs["plain"])
                         for t, p in zip(run["step_ms"], base["step_ms"])]) for c in CONFIGS}
    rss = {c: median([run["maxrss_mb"] for run in runs[c]]) for c in CONFIGS}
    bytes_pp = {c: runs[c][-1]["held_bytes"] / info["n_prunable"] for c in CONFIGS}

    print("| config | median step (ms) | ratio to plain (paired) | extra bytes / prunable param | peak RSS (MB) "
          "| delta RSS vs plain (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in CONFIGS:
        ratio = "1" if c == "plain" else f"{med[c] / med['plain']:.3f} ({paired[c]:.3f})"
        bpp = "-" if c == "plain" else f"{bytes_pp[c]:.2f}"
        delta = "-" if c == "plain" else f"{rss[c] - rss['plain']:+.1f}"
        print(f"| {c} | {med[c]:.1f} | {ratio} | {bpp} | {rss[c]:.0f} | {delta} |")
    print()
    print("| config | mean step (ms) | in-hook time per step, median / mean (ms) | mean by callback (ms/step) "
          "| pruned fraction, first -> last timed step |")
    print("|---|---:|---:|---|---|")
    for c in CONFIGS:
        mean = statistics.fmean(pooled[c])
        if c == "plain":
            print(f"| {c} | {mean:.1f} | - | - | - |")
            continue
        per_step, by_key = hook_summary(runs[c])
        first, last = runs[c][-1]["sparsity"]
        print(f"| {c} | {mean:.1f} | {median(per_step):.2f} / {statistics.fmean(per_step):.2f} | {by_key} "
              f"| {first:.3f} -> {last:.3f} |")
    print()
    print("In-hook time: wall time inside the benchmarked callbacks' hooks (and GradualPruning's optimizer step "
          "post-hook), part of the step time; for ModelPruning, its forward pre-hooks (weight = weight_orig * "
          "weight_mask), not its extra backward work.")
    updates = runs["all three"][-1]["mask_updates"]
    print(f"GradualPruning mask updates at steps {updates} (in the timed window: "
          f"{[u for u in updates if args.warmup < u <= args.warmup + args.steps] or 'none'}); "
          f"log_every_n_steps {args.log_every_n_steps}, logging steps in the timed window: "
          f"{logging_steps(args) or 'none'}")
    print()

    over = med["all three"] / med["plain"] - 1
    print(f"- all three callbacks add <= 3% to the median step time: {over:+.1%} "
          f"(paired: {paired['all three'] - 1:+.1%}) -> {verdict(over <= TARGET_OVERHEAD)}")
    b = bytes_pp["GradualPruning"]
    print(f"- GradualPruning holds <= {TARGET_BYTES} extra bytes per prunable parameter: {b:.2f} "
          f"(ModelPruning {bytes_pp['ModelPruning']:.2f}) -> {verdict(b <= TARGET_BYTES)}")
    gp, mp = med["GradualPruning"], med["ModelPruning"]
    print(f"- GradualPruning costs less step time than ModelPruning: median {gp:.1f} ms vs {mp:.1f} ms "
          f"({gp / mp - 1:+.1%}; paired ratios to plain {paired['GradualPruning']:.3f} vs "
          f"{paired['ModelPruning']:.3f}) -> {verdict(gp < mp)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
