"""Faults for the sweep's training tests: a callback that kills its own process (SIGKILL) or raises, once.

Listed in a test family's config (``class_path: sweep_faults.FaultOnce``, imported from tests/ through the sweep's
``module_path``). The first run of the family that reaches `step` with `d_model` (any width when None) takes the
fault, claimed by creating `marker` exclusively; every later start goes through untouched. So a killed run is resumed
(its checkpoint was written at an earlier validation), and a run that raised is started again.
"""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class FaultOnce(Callback):
    def __init__(self, kind: str, step: int, marker: str, d_model: int | None = None):
        if kind not in ("kill", "raise"):
            raise ValueError(f"kind must be 'kill' or 'raise', got {kind!r}")
        self.kind, self.step, self.marker, self.d_model = kind, step, marker, d_model

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        if self.d_model is not None and pl_module.hparams.get("d_model") != self.d_model:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"a fault injected by the test at step {self.step}")
