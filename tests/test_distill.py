"""Distillation end to end on a tiny budget, its data modes and its compression report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisystudent.core import runs
from noisystudent.core.config import DistillConfig
from noisystudent.core.errors import UserError
from noisystudent.core.settings_io import build
from noisystudent.data.imageset import ImageSet
from noisystudent.reports.compression import COMPRESSION_JSON, COMPRESSION_MD
from noisystudent.reports.evaluate import evaluate
from noisystudent.stages.distill import (
    distill,
    student_loader,
    student_pools,
)
from noisystudent.stages.train import train

from .conftest import needs_fashion_mnist, quick_config


@pytest.fixture
def teacher_run(tiny_teacher):
    return tiny_teacher


def distill_config(teacher, **overrides) -> DistillConfig:
    settings = {**quick_config(labels_per_class=3).__dict__, "model": "mobilenetv3_small_050",
                "teacher": str(teacher), "steps_per_epoch": 2, "temperature": 2.0}
    settings.update(overrides)
    return DistillConfig(**settings)


def test_student_pools_hide_labels_and_both_mixes_every_batch():
    images = ImageSet(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10) % 2,
                      ["a", "b"])
    split = {"labeled": np.array([0, 1]), "val": np.array([], dtype=np.int64),
             "unlabeled": np.arange(2, 10)}
    labeled, unlabeled = student_pools(images, split, "labeled", None)
    assert labeled.labels.tolist() == [0, 1] and unlabeled is None
    labeled, unlabeled = student_pools(images, split, "unlabeled", None)
    assert labeled is None and (unlabeled.labels == -1).all() and len(unlabeled) == 8
    labeled, unlabeled = student_pools(images, split, "both", None)
    config = DistillConfig(teacher="t", batch_size=2, unlabeled_ratio=3, steps_per_epoch=5)
    loader = student_loader(labeled, unlabeled, config, torch.device("cpu"))
    batches = list(loader)
    assert len(batches) == 5
    assert all((b["labels"] >= 0).sum() == 2 and (b["labels"] == -1).sum() == 6 for b in batches)


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.parametrize("mode", ["both"])
def test_distill_smoke_with_compression_report(tmp_path, teacher_run, mode):
    baseline = tmp_path / "baseline"
    train(quick_config(labels_per_class=3, model="mobilenetv3_small_050"), baseline, quiet=True)
    run = tmp_path / "student"
    metrics = distill(distill_config(teacher_run, data_mode=mode, baseline=str(baseline),
                                     feature_weight=0.5), run, quiet=True)
    assert metrics["steps"] == 2
    # The saved model is the trained student: evaluating it again gives the reported top-1.
    assert evaluate(run, quiet=True)["top1"] == pytest.approx(metrics["test_top1"], abs=2e-3)
    rows = runs.read_json(run / COMPRESSION_JSON)
    assert [r["name"] for r in rows] == ["teacher", "student without teacher",
                                         "distilled student"]
    assert rows[0]["mflops"] > rows[2]["mflops"] > 0
    # ONNX Runtime latency beside PyTorch's, measured on each exported model.
    assert all(r["onnx_latency_ms_batch256"] > r["onnx_latency_ms_batch1"] > 0 for r in rows)
    assert "| teacher: resnet10t @32" in (run / COMPRESSION_MD).read_text()
    # The deployed student holds no training-only projection: its keys are the model's own.
    keys = set(runs.load_weights(run / runs.MODEL))
    assert not any(k.startswith(("projection", "student.")) for k in keys)
    assert "classifier.weight" in keys


def test_distill_requires_a_teacher():
    with pytest.raises(UserError, match="--teacher"):
        build(DistillConfig, {})
