"""``mlflow: true`` (``--mlflow``): the run in MLflow, through ``MlflowClient`` (the ``mlflow``
extra). The tracking URI is ``mlflow_uri``, else MLflow's own default: ``MLFLOW_TRACKING_URI``,
else a SQLite store ``mlflow.db`` in the current folder, whose artifacts go to
``mlartifacts/`` beside it (``mlflow ui`` in that folder opens both, with no server to set up;
MLflow 3 keeps the older ``./mlruns`` file store in maintenance mode and refuses it by
default). The experiment is ``MLFLOW_EXPERIMENT_NAME``, else 'noisystudent'.

A run directory has one MLflow run, named after it, whose id is kept in ``mlflow.json``
inside it. A step of a self-training run (teacher, each labeling, each student) is a nested
run under the self-training run's, named by its path in the run (``iter1/student``). A run's
resolved settings are its parameters (logged once, when it is created); every per-epoch
metric goes in as it is measured, at the epoch as its step. A resumed run reopens the same
MLflow run and skips the steps a metric already has, so nothing is logged twice. Only rank 0
logs.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from noisystudent.core import distributed, runs
from noisystudent.core.errors import UserError

RECORD = "mlflow.json"
EXPERIMENT = "noisystudent"


def mlflow_client(uri: str | None):
    """An MlflowClient for ``uri`` (see the module's text), and the URI it tracks to."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("--mlflow needs the mlflow package: "
                        "pip install -e '.[mlflow]' in a checkout") from None
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri), uri


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts/`` beside a SQLite store
    (else the tracking server's choice)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix):]).resolve().parent / "mlartifacts").as_uri()


def flat_params(settings: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: ``teacher.model`` = 'tf_efficientnet_lite0'."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) \
                else str(value)
    return flat


class MlflowRun:
    """A run directory's MLflow run: created on first use (nested under the parent directory's
    run where that has one), reopened from ``mlflow.json`` on a resume."""

    def __init__(self, run_dir: str | Path, uri: str | None, settings: dict):
        self.run_dir = Path(run_dir)
        record = self.run_dir / RECORD
        if record.is_file():
            saved = runs.read_json(record)
            self.client, _ = mlflow_client(saved["tracking_uri"])
            self.run_id = saved["run_id"]
            self.logged = self._logged_steps()
            return
        self.client, tracking_uri = mlflow_client(uri)
        from mlflow.entities import Param

        tags = {"noisystudent.run_dir": str(self.run_dir.resolve())}
        name = self.run_dir.resolve().name
        parent = next((p for p in self.run_dir.resolve().parents[:2]
                       if (p / RECORD).is_file()), None)
        if parent is not None:  # a step of a self-training run (RUN/iterK/student)
            tags["mlflow.parentRunId"] = runs.read_json(parent / RECORD)["run_id"]
            name = self.run_dir.resolve().relative_to(parent).as_posix()
        run = self.client.create_run(self._experiment(tracking_uri), run_name=name, tags=tags)
        self.run_id, self.logged = run.info.run_id, {}
        params = [Param(k, v[:6000]) for k, v in flat_params(settings).items()]
        for start in range(0, len(params), 100):  # MLflow takes 100 parameters a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        runs.write_json(record, {"tracking_uri": tracking_uri, "run_id": self.run_id})

    def _experiment(self, uri: str) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=artifact_root(uri))

    def _logged_steps(self) -> dict[str, int]:
        """The last step each metric of the run has (a resume logs only later ones)."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key))
                for key in keys}

    def log_metrics(self, values: dict, step: int) -> None:
        """Every finite number of ``values`` at ``step``, unless the metric has it already."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)
                   and math.isfinite(value) and step > self.logged.get(key, -1)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
            self.logged.update({m.key: step for m in metrics})

    def log_artifact(self, path: str | Path) -> None:
        if Path(path).is_file():
            self.client.log_artifact(self.run_id, str(path))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


def open_mlflow(run_dir: str | Path, enabled: bool, uri: str | None,
                settings: dict) -> MlflowRun | None:
    """The run directory's MLflow run where ``enabled`` and on rank 0; else None."""
    if not enabled or not distributed.is_main():
        return None
    return MlflowRun(run_dir, uri, settings)


def log_step(directory: str | Path, settings: dict, values: dict, *, config) -> None:
    """A finished step that trains nothing (a labeling) as a nested run: its ``settings`` and
    ``values`` (``config``: the run's, whose ``mlflow`` settings apply)."""
    run = open_mlflow(directory, config.mlflow, config.mlflow_uri, settings)
    if run is not None:
        run.log_metrics(values, 0)
        run.finish()
