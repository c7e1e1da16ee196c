"""Run ``labecg train`` with the given flags and record what each rank trained on.

    python tests/ddp_run.py RECORD_DIR --cohort-dir C --run-dir RUN --devices 2 --strategy ddp ...

Lightning's DDP launcher starts this same script again for every further rank; each rank
writes ``RECORD_DIR/crops_rank{r}.npy``, int64 (n_items, 3): epoch, cohort row and crop start
of every training item its steps received. The flags go through the CLI's parser.
"""

import sys
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from labecg.cli import config_from_args
from labecg.train import TrainConfig, train


class RecordCrops(pl.Callback):
    def __init__(self, folder: Path):
        self.folder, self.seen = Path(folder), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        n = len(batch["row"])
        self.seen.append(np.stack([np.full(n, trainer.current_epoch), batch["row"].cpu().numpy(),
                                   batch["start"].cpu().numpy()], axis=1))

    def on_train_end(self, trainer, pl_module):
        np.save(self.folder / f"crops_rank{trainer.global_rank}.npy", np.concatenate(self.seen))


if __name__ == "__main__":
    train(config_from_args(TrainConfig, sys.argv[2:]), callbacks=(RecordCrops(Path(sys.argv[1])),))
