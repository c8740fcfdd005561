"""--tensorboard: the metrics a run logs, read back from its event files."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisystudent.core import runs
from noisystudent.core.errors import UserError
from noisystudent.reports.tensorboard import FOLDER, Scalars

from .conftest import needs_fashion_mnist, quick_config, without_package

pytest.importorskip("tensorboard")


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


@needs_fashion_mnist
def test_training_writes_every_epoch_metric_and_the_test_top1(tmp_path):
    from noisystudent.stages.train import train

    run = tmp_path / "run"
    train(quick_config(epochs=2, val_per_class=2, tensorboard=True), run, quiet=True)
    scalars = read_scalars(run / FOLDER)
    logged = runs.read_jsonl(run / runs.METRICS_LOG)
    for key in ("loss", "ce", "lr", "images_per_s", "val_top1"):
        assert [step for step, _ in scalars[f"epoch/{key}"]] == [1, 2]
        assert [value for _, value in scalars[f"epoch/{key}"]] == \
            pytest.approx([line[key] for line in logged])
    assert scalars["test/top1"] == [(2, pytest.approx(runs.read_json(run / runs.METRICS)
                                                      ["test_top1"]))]


@needs_fashion_mnist
def test_without_the_flag_nothing_is_written(tmp_path):
    from noisystudent.stages.train import train

    train(quick_config(), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / FOLDER).exists()


def test_a_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    without_package(monkeypatch, "torch.utils.tensorboard")
    with pytest.raises(UserError, match=r"pip install -e '\.\[tensorboard\]'"):
        Scalars(tmp_path, enabled=True)
    Scalars(tmp_path, enabled=False).add("x", {"y": 1.0}, 1)  # off: needs nothing
