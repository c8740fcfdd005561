"""``tensorboard: true`` (``--tensorboard``): the run's scalars as TensorBoard event files in
RUN_DIR/tensorboard, through ``torch.utils.tensorboard`` (the ``tensorboard`` extra). Every
stage writes its own per-epoch metrics (loss parts, lr, images/s, validation top-1) and its
test top-1; ``self-train`` adds one point per iteration (pseudo-label accuracy, selected count,
test top-1, mCE). ``tensorboard --logdir RUN_DIR`` shows a self-training run's stages side by
side. Only rank 0 writes."""

from __future__ import annotations

import math
from pathlib import Path

from noisystudent.core import distributed
from noisystudent.core.errors import UserError

from .mlflow_tracking import MlflowRun

FOLDER = "tensorboard"


class Scalars:
    """A SummaryWriter when enabled (on rank 0), else nothing at all; and the run's MLflow run
    where it has one (``mlflow_tracking.py``), which gets the same numbers."""

    def __init__(self, run_dir: str | Path, enabled: bool, mlflow: MlflowRun | None = None):
        self.writer, self.mlflow = None, mlflow
        if not enabled or not distributed.is_main():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install -e '.[tensorboard]' in a checkout") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / FOLDER))

    def add(self, group: str, values: dict, step: int) -> None:
        """Every finite number of ``values`` as ``group/name`` at ``step``."""
        if self.mlflow is not None:
            self.mlflow.log_metrics({f"{group}/{k}": v for k, v in values.items()}, step)
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(f"{group}/{name}", value, step)
        self.writer.flush()  # readable while the run goes on

    def close(self) -> None:
        if self.mlflow is not None:
            self.mlflow.finish()
            self.mlflow = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
