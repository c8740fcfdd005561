"""The Noisy Student loop: configs/smoke.yaml end to end, and resume without recomputation."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisystudent import runs, selftrain
from noisystudent.config import SelfTrainConfig, load_config
from noisystudent.errors import UserError
from noisystudent.report import ACCURACY_PNG, CORRUPTIONS_PNG, REPORT_MD

from .conftest import interrupt_on_call, needs_fashion_mnist

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.slow
@needs_fashion_mnist
def test_smoke_config_end_to_end_and_resume(tmp_path, monkeypatch):
    config = load_config(SelfTrainConfig, SMOKE)
    real_student = selftrain.train_student
    monkeypatch.setattr(selftrain, "train_student", interrupt_on_call(real_student, 2))
    with pytest.raises(KeyboardInterrupt):
        selftrain.self_train(config, tmp_path / "run", quiet=True)
    first = tmp_path / "run" / "iter1" / "student" / runs.MODEL
    labels = tmp_path / "run" / "iter2" / "pseudo-labels" / "summary.json"
    stamps = {p: p.stat().st_mtime_ns for p in (first, labels)}
    assert not (tmp_path / "run" / "iter2" / "student" / runs.MODEL).exists()

    monkeypatch.setattr(selftrain, "train_student", real_student)
    report = selftrain.self_train(None, tmp_path / "run", resume=True, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished steps not redone
    assert [r["iteration"] for r in report["rows"]] == [0, 1, 2]
    teacher, *students = report["rows"]
    for row in students:  # mCE against the teacher, from both rows' errors by hand
        ce = [100 * sum(row["corruption_errors"][n]) / sum(teacher["corruption_errors"][n])
              for n in teacher["corruption_errors"]]
        assert row["mce"] == pytest.approx(sum(ce) / len(ce))
    # The report holds what each stage measured.
    for row in report["rows"]:
        metrics = runs.read_json(Path(row["run"]) / runs.METRICS)
        assert row["test_top1"] == metrics["test_top1"]
    assert all(r["pseudo_label_accuracy"] is not None for r in report["rows"][1:])
    text = (tmp_path / "run" / REPORT_MD).read_text()
    assert "| 2 (student 2) | resnet10t @32 |" in text
    for png in (ACCURACY_PNG, CORRUPTIONS_PNG):
        assert (tmp_path / "run" / png).stat().st_size > 1000
    # Students learn the teacher's labeled split.
    assert (tmp_path / "run" / "iter2" / "student" / runs.SPLITS).read_text() == \
        (tmp_path / "run" / "iter0-teacher" / runs.SPLITS).read_text()


def test_growing_student_schedule_and_shared_keys():
    config = SelfTrainConfig(student_models=["tf_efficientnet_lite0", "tf_efficientnet_lite1"])
    config.validate()
    assert config.student_config(1, "x").model == "tf_efficientnet_lite0"
    assert config.student_config(3, "x").model == "tf_efficientnet_lite1"  # the last repeats
    with pytest.raises(UserError, match="student.seed is shared"):
        SelfTrainConfig(student={"seed": 3}).validate()
    with pytest.raises(UserError, match="unknown config key student.rate"):
        SelfTrainConfig(student={"rate": 3}).validate()
