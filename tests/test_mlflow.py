"""--mlflow: what a run logs, read back with MlflowClient from a local SQLite store: the runs and
nested steps, their settings, every per-epoch metric, the report's figures and the artifacts;
a resumed run continues the same MLflow run without logging a step twice."""

from __future__ import annotations

import pytest

from noisystudent.core import runs
from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.errors import UserError
from noisystudent.reports.mlflow_tracking import RECORD, flat_params, open_mlflow

from .conftest import interrupt_on_call, needs_fashion_mnist, quick_config, without_package

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def all_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("noisystudent")
    return client.search_runs([experiment.experiment_id])


@needs_fashion_mnist
def test_training_logs_its_settings_and_every_epoch(tmp_path, monkeypatch):
    from noisystudent.stages.train import train
    from noisystudent.training import engine

    config = quick_config(epochs=3, val_per_class=2, mlflow=True, mlflow_uri=store(tmp_path))
    real_epoch = engine.train_one_epoch
    monkeypatch.setattr(engine, "train_one_epoch", interrupt_on_call(real_epoch, 2))
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", quiet=True)
    monkeypatch.setattr(engine, "train_one_epoch", real_epoch)
    train(None, tmp_path / "run", resume=True, quiet=True)  # the same MLflow run goes on

    client = MlflowClient(store(tmp_path))
    [run] = all_runs(client)
    assert run.info.run_id == runs.read_json(tmp_path / "run" / RECORD)["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model"] == "resnet10t" and run.data.params["epochs"] == "3"
    logged = runs.read_jsonl(tmp_path / "run" / runs.METRICS_LOG)
    for key in ("loss", "lr", "images_per_s", "val_top1"):
        assert history(client, run.info.run_id, f"epoch/{key}") == \
            [(line["epoch"], pytest.approx(line[key])) for line in logged]
    test_top1 = runs.read_json(tmp_path / "run" / runs.METRICS)["test_top1"]
    assert history(client, run.info.run_id, "test/top1") == [(3, pytest.approx(test_top1))]


def test_a_resumed_run_logs_no_step_twice(tmp_path):
    settings = {"teacher": {"model": "m", "epochs": 2}, "models": ["a", "b"]}
    assert flat_params(settings) == {"teacher.model": "m", "teacher.epochs": "2",
                                     "models": '["a", "b"]'}
    first = open_mlflow(tmp_path / "run", True, store(tmp_path), settings)
    first.log_metrics({"loss": 1.0, "note": "text", "bad": float("nan")}, 1)
    first.log_metrics({"loss": 0.5}, 2)
    again = open_mlflow(tmp_path / "run", True, None, settings)  # reopened from mlflow.json
    assert again.run_id == first.run_id
    again.log_metrics({"loss": 0.4}, 2)  # step 2 is there already
    again.log_metrics({"loss": 0.3}, 3)
    client = MlflowClient(store(tmp_path))
    assert history(client, first.run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert set(client.get_run(first.run_id).data.metrics) == {"loss"}
    assert open_mlflow(tmp_path / "off", False, None, settings) is None


def test_a_missing_mlflow_names_the_extra(tmp_path, monkeypatch):
    without_package(monkeypatch, "mlflow")
    with pytest.raises(UserError, match=r"pip install -e '\.\[mlflow\]'"):
        open_mlflow(tmp_path / "run", True, None, {})


@pytest.mark.slow
@needs_fashion_mnist
def test_self_train_is_one_run_with_a_nested_run_per_step(tmp_path):
    from noisystudent.stages.selftrain import self_train

    tiny = {"model": "resnet10t", "pretrained": "none", "epochs": 2, "batch_size": 8,
            "image_size": 32}
    config = SelfTrainConfig(
        labels_per_class=3, val_per_class=2, iterations=1, corruptions=False, teacher=tiny,
        pseudo_label={"threshold": 0.0, "max_images": 300},
        student=tiny | {"passes": 1}, mlflow=True, mlflow_uri=store(tmp_path))
    report = self_train(config, tmp_path / "run", quiet=True)
    client = MlflowClient(store(tmp_path))
    found = {run.info.run_name: run for run in all_runs(client)}
    assert set(found) == {"run", "iter0-teacher", "iter1/pseudo-labels", "iter1/student"}
    top = found["run"]
    for step in ("iter0-teacher", "iter1/pseudo-labels", "iter1/student"):
        assert found[step].data.tags["mlflow.parentRunId"] == top.info.run_id
        assert found[step].info.status == "FINISHED"
    assert top.data.params["teacher.model"] == "resnet10t"
    assert "passes" in found["iter1/student"].data.params
    assert [step for step, _ in history(client, found["iter1/student"].info.run_id,
                                        "epoch/loss")] == [1, 2]
    labels = runs.read_json(tmp_path / "run" / "iter1" / "pseudo-labels" / "summary.json")
    assert found["iter1/pseudo-labels"].data.metrics["selected"] == labels["selected"]
    rows = report["rows"]
    assert history(client, top.info.run_id, "iteration/test_top1") == \
        [(row["iteration"], pytest.approx(row["test_top1"])) for row in rows]
    assert history(client, top.info.run_id, "iteration/val_top1") == \
        [(row["iteration"], pytest.approx(row["val_top1"])) for row in rows]
    assert top.data.metrics["kept/test_top1"] == pytest.approx(report["final_test_top1"])
    artifacts = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"report.html", "report.md", "config.yaml", "model.onnx"} <= artifacts

    self_train(None, tmp_path / "run", resume=True, quiet=True)  # nothing new: nothing twice
    assert len(all_runs(client)) == 4
    assert len(client.get_metric_history(top.info.run_id, "iteration/test_top1")) == len(rows)
