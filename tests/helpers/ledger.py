"""A callback that writes down which training positives each rank saw, for the DDP test.

It runs inside ``wdrec fit`` subprocesses (``--trainer.callbacks+=helpers.ledger.SampleLedger``,
with ``tests/`` on PYTHONPATH), so it must be importable by class path.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class SampleLedger(L.Callback):
    """Appends every (user row, item row) positive of epoch 0 to ``<folder>/rank<k>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.current_epoch == 0:
            positive = batch["label"] > 0.5
            self.seen += list(zip(batch["user"][positive].tolist(), batch["item"][positive].tolist(), strict=True))

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.current_epoch == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))
