"""Train with the five callbacks on several CPU processes; each rank writes what it saw to OUT/rank<r>.json.

    python tests/multiprocess_script.py OUT {ddp|fsdp2} STEPS [--resume CKPT] [--save-every K]

Run as a subprocess by `test_multiprocess.py`: Lightning's DDP launcher starts the other rank by running this same
command again, so it must be a script, not a test function. `fsdp2` is Lightning's `ModelParallelStrategy` with
`fully_shard` (FSDP2) in `configure_model`, which Lightning runs on CPU.

Besides the callbacks' own numbers, every rank counts, per optimizer step, the collectives issued from this
package's code (any torch.distributed call with a `lightning_scaling` frame on the stack) and its host reads of
device tensors (`.item()`, `.tolist()`, `bool()`, `int()`, `float()` called from this package).
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

COUNTS = Counter()


def _ours(depth: int = 2) -> bool:
    return sys._getframe(depth).f_globals.get("__name__", "").startswith("lightning_scaling")


def _on_stack() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("lightning_scaling"):
            return True
        frame = frame.f_back
    return False


def _count_host_reads():
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            if _ours():
                COUNTS["host_reads"] += 1
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, wrapper)


def _count_collectives():
    for name in ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce_scatter",
                 "reduce_scatter_tensor", "all_gather_object", "broadcast_object_list", "barrier"):
        original = getattr(dist, name)

        def wrapper(*args, _original=original, **kwargs):
            if _on_stack():
                COUNTS["collectives"] += 1
            return _original(*args, **kwargs)

        setattr(dist, name, wrapper)


def main(argv: list[str]) -> None:
    out, strategy_name, steps = Path(argv[0]), argv[1], int(argv[2])
    resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
    save_every = int(argv[argv.index("--save-every") + 1]) if "--save-every" in argv else 0
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    _count_host_reads()
    _count_collectives()

    import lightning.pytorch as lp
    from compat_models import HFGPT2
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import MLFlowLogger

    from lightning_scaling.callbacks import GradualPruning, MuP, PowerLR, ScalingLawAdvisor, ScalingTracker

    callbacks_mup = []
    if strategy_name == "ddp":
        model_cls = HFGPT2
        strategy = "ddp"
        callbacks_mup = [MuP(base={"n_embd": 16}, convert_readout=True)]
    else:
        from lightning.pytorch.strategies import ModelParallelStrategy
        from torch.distributed.fsdp import fully_shard

        class ShardedGPT2(HFGPT2):
            def configure_model(self):
                mesh = self.device_mesh["data_parallel"]
                for block in self.model.transformer.h:
                    fully_shard(block, mesh=mesh)
                fully_shard(self.model, mesh=mesh)

        model_cls = ShardedGPT2
        callbacks_mup = [MuP(base={"n_embd": 16}, convert_readout=True)]
        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1,
                                         save_distributed_checkpoint=False)

    class Probe(lp.Callback):
        """Independent per-rank records: local tokens, collectives and host reads per step, the learning rates."""

        def __init__(self):
            self.tokens = 0
            self.per_step = []
            self.lrs = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.tokens += int(batch["attention_mask"].sum())

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.lrs.append([g["lr"] for g in optimizer.param_groups])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.per_step.append({"step": trainer.global_step, **COUNTS})
            COUNTS.clear()

    lp.seed_everything(0, verbose=False)
    model = model_cls()
    tracker = ScalingTracker(log_every_n_steps=4)
    pruning = GradualPruning(final_sparsity=0.5, update_every=2)
    advisor = ScalingLawAdvisor(bootstrap=0)
    probe = Probe()
    callbacks = [*callbacks_mup, PowerLR(warmup_tokens=300), pruning, tracker, advisor, probe]
    if save_every:
        callbacks.append(ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=save_every, save_top_k=-1))
    logger = MLFlowLogger(experiment_name="multiprocess", tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
                          artifact_location=str(out / "artifacts"))
    trainer = lp.Trainer(max_steps=steps, accelerator="cpu", devices=2, strategy=strategy, logger=logger,
                         log_every_n_steps=4, enable_checkpointing=bool(save_every), enable_progress_bar=False,
                         use_distributed_sampler=False,
                         enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, ckpt_path=resume)

    masks = hashlib.sha256()
    for name in sorted(pruning.masks):
        from lightning_scaling.nn.masks import full_masks

        masks.update(full_masks({name: pruning.masks[name]})[name].numpy().tobytes())
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [(round(g["lr"], 15), g.get("weight_decay"), [names.get(id(p), "?") for p in g["params"]])
              for g in trainer.optimizers[0].param_groups]
    report = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "local_tokens": probe.tokens,
        "tracker": {**tracker.metrics(), "params_total": tracker.param_counts.get("total")},
        "masks_sha256": masks.hexdigest(),
        "sparsity": pruning.sparsity,
        "groups_sha256": hashlib.sha256(json.dumps(groups).encode()).hexdigest(),
        "lrs": probe.lrs,
        "per_step": probe.per_step,
        "advised": advisor.recommendation is not None,
        "run_id": tracker.run_id,
        "state_restored_from": tracker._restored_run_id,
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1:])
