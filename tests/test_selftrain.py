"""The Noisy Student loop: configs/smoke.yaml end to end, and resume without recomputation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from noisystudent.core import runs
from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.errors import UserError
from noisystudent.core.keep import (
    AGAINST_TEACHER,
    AHEAD_OF_TEACHER,
    STRICT,
    kept_step,
    untrusted_steps,
    worse_by_chance,
)
from noisystudent.core.layout import kept_model
from noisystudent.core.settings_io import build, load_config, to_dict
from noisystudent.models.saved import load_trained
from noisystudent.reports.report import (
    ACCURACY_PNG,
    CORRUPTIONS_PNG,
    REPORT_MD,
    kept_row,
    regression,
)
from noisystudent.stages import selftrain

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
    assert "| 2 (student 2" in text and "| cifar_resnet20 @28 |" in text
    # replay.yaml: every value the run ran with, each student's length, no budget.
    replay = runs.read_yaml(tmp_path / "run" / selftrain.REPLAY)
    assert replay["budget"] is None and len(replay["students"]) == 2
    replayed = build(SelfTrainConfig, replay)
    for k in (1, 2):
        ran = runs.read_yaml(tmp_path / "run" / f"iter{k}" / "student" / runs.CONFIG)
        again = to_dict(replayed.student_config(k, ran["pseudo_labels"]))
        # The seed of a student after a kept teacher is the loop's (selftrain.student_config),
        # drawn again from the steps the replay keeps.
        assert {key: again[key] for key in ran if key != "seed"} == \
            {key: value for key, value in ran.items() if key != "seed"}
    # A validation split held out of the labels (10%: 1 of each class's 10), each step
    # measured on it, and the run keeps the step keep.py chooses; commands given the run use it.
    split = runs.read_json(tmp_path / "run" / "iter0-teacher" / runs.SPLITS)
    assert (len(split["labeled"]), len(split["val"])) == (90, 10)
    rows = report["rows"]
    assert all(r["val_images"] == 10 and 0 <= r["val_top1"] <= 1 for r in rows)
    assert all(r["val_correct"].count("1") == round(10 * r["val_top1"]) for r in rows)
    kept = kept_step(rows)[0]  # the later step unless shown worse on the same 10 images
    assert report["final_chosen_by"].startswith("paired sign test on validation")
    assert len(report["comparisons"]) == len(rows) - 1
    assert report["final_iteration"] == rows[kept]["iteration"]
    assert report["final_test_top1"] == rows[kept]["test_top1"]
    assert f"({rows[kept]['role']}, kept)" in text
    # Each model's minutes: its training and the labeling it learned from, across the resume.
    times = runs.read_json(tmp_path / "run" / "timings.json")
    assert set(times) == {"report-corruptions", "iter0-teacher", "iter1/pseudo-labels",
                          "iter1/student", "iter2/pseudo-labels", "iter2/student", "report"}
    assert rows[2]["minutes"] == pytest.approx(
        (times["iter2/pseudo-labels"] + times["iter2/student"]) / 60)
    assert kept_model(tmp_path / "run") == Path(rows[kept]["run"])
    assert load_trained(tmp_path / "run", torch.device("cpu")).run_dir == Path(rows[kept]["run"])
    for png in (ACCURACY_PNG, CORRUPTIONS_PNG):
        assert (tmp_path / "run" / png).stat().st_size > 1000
    # report.html: every section of a run with hidden true labels and corruptions.
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for section in ("Iterations", "Test set: the kept model", "Iteration 2: what the student 1 "
                    "labeled", "Confident mistakes", "Changed since the labeling before",
                    "Corrupted test images", "The images to label next"):
        assert section in page
    # Students learn the teacher's labeled split.
    assert (tmp_path / "run" / "iter2" / "student" / runs.SPLITS).read_text() == \
        (tmp_path / "run" / "iter0-teacher" / runs.SPLITS).read_text()


def test_growing_student_schedule_and_shared_keys():
    config = SelfTrainConfig(student_models=["tf_efficientnet_lite0", "tf_efficientnet_lite1"])
    assert config.student_config(1, "x").model == "tf_efficientnet_lite0"
    assert config.student_config(3, "x").model == "tf_efficientnet_lite1"  # the last repeats
    with pytest.raises(UserError, match="student.seed is shared"):
        build(SelfTrainConfig, {"student": {"seed": 3}})
    with pytest.raises(UserError, match="unknown config key student.rate"):
        build(SelfTrainConfig, {"student": {"rate": 3}})


def test_a_student_after_a_kept_teacher_is_another_try_not_a_repeat(tmp_path):
    from noisystudent.core.layout import SelfTrainLayout

    config, layout = SelfTrainConfig(seed=5), SelfTrainLayout(tmp_path)
    # Student 1 learns its teacher's labels; so does student 2 where the teacher stayed kept.
    assert selftrain.student_config(config, layout, 1, kept=0).seed == 5
    assert selftrain.student_config(config, layout, 2, kept=1).seed == 5
    assert selftrain.student_config(config, layout, 2, kept=0).seed == 6
    assert selftrain.student_config(config, layout, 3, kept=0).seed == 7


@pytest.mark.slow
def test_own_images_with_teacher_and_student_at_different_sizes(tmp_path, image_tree,
                                                                monkeypatch):
    """Your own images are stored once, at the largest size any stage sees; each model resizes
    to its own, so labeled and pseudo-labeled batches always concatenate."""
    from noisystudent.reports.evaluate import evaluate

    # The fine-tune starts from a kept student; a one-epoch student need not lead the teacher
    # on this folder's few validation images, so the loop is told it did.
    monkeypatch.setattr(selftrain, "kept_after", lambda config, layout, k: k)

    train_dir, test_dir = image_tree
    config = SelfTrainConfig(
        data=str(train_dir), test_data=str(test_dir), labels_per_class=4, iterations=1,
        corruptions=False,
        teacher={"model": "resnet10t", "pretrained": "none", "epochs": 1, "batch_size": 8,
                 "image_size": 32},
        pseudo_label={"threshold": 0.0},
        student={"model": "resnet10t", "pretrained": "none", "epochs": 1, "batch_size": 4,
                 "image_size": 48, "small_image": 1, "passes": 2, "cutout": 8,
                 "padding": "reflect", "loss_weighting": "per-image"},
        finetune={"epochs": 1, "batch_size": 8, "lr": 1e-4}, tensorboard=True)
    report = selftrain.self_train(config, tmp_path / "run", quiet=True)
    student = tmp_path / "run" / "iter1" / "student"
    info = runs.read_json(student / runs.MODEL_INFO)
    assert info["stored_size"] == 48 and info["input"]["size"] == 48
    assert info["small_image"] == 1
    metrics = runs.read_json(student / runs.METRICS)
    # 2 passes over the selected pseudo-labeled images, 4 x 3 = 12 of them per step.
    labels = runs.read_json(tmp_path / "run" / "iter1" / "pseudo-labels" / "summary.json")
    selected = labels["selected"]
    assert metrics["steps"] == math.ceil(2 * selected / 12)
    assert metrics["passes"] == pytest.approx(metrics["steps"] * 12 / selected)
    # The saved student is rebuilt with its strides: evaluating it repeats its test top-1.
    assert evaluate(student, quiet=True)["top1"] == pytest.approx(metrics["test_top1"],
                                                                  abs=1e-6)
    assert [r["role"] for r in report["rows"]] == ["teacher", "student 1",
                                                   "student 1, fine-tuned"]
    finetuned = runs.read_yaml(tmp_path / "run" / "finetune" / runs.CONFIG)
    assert finetuned["pretrained"] == str(student / runs.MODEL)
    assert finetuned["image_size"] == 48 and finetuned["augment"] == "light"
    assert finetuned["warmup_epochs"] == 0 and finetuned["padding"] == "reflect"
    # --tensorboard: each stage's epochs in its own folder, one point per iteration at the top.
    from .test_tensorboard import read_scalars

    student_scalars = read_scalars(student / "tensorboard")
    assert {"epoch/loss", "epoch/pseudo", "epoch/lr", "test/top1"} <= set(student_scalars)
    top = read_scalars(tmp_path / "run" / "tensorboard")
    assert top["iteration/test_top1"] == [(row["iteration"], pytest.approx(row["test_top1"]))
                                          for row in report["rows"][:2]]
    assert [step for step, _ in top["iteration/pseudo_label_accuracy"]] == [1]
    assert top["iteration/pseudo_labeled"] == [(1, selected)]
    assert top["finetune/test_top1"][0][0] == 1


def test_student_length_in_passes_and_the_size_check(tmp_path, tiny_teacher):
    from noisystudent.core.config import StudentConfig
    from noisystudent.core.settings_io import build
    from noisystudent.models.build import create_model
    from noisystudent.models.transforms import InputSpec
    from noisystudent.stages.student import check_student_size, steps_per_epoch

    config = StudentConfig(pseudo_labels="x", batch_size=10, unlabeled_ratio=3, epochs=4,
                           passes=6)
    assert steps_per_epoch(config, 1000) == 50           # 6 x 1000 / (30 x 4)
    config.passes, config.steps_per_epoch = 0, 0
    assert steps_per_epoch(config, 1000) == 33           # one pass per epoch
    with pytest.raises(UserError, match="either passes or steps_per_epoch"):
        build(StudentConfig, {"pseudo_labels": "x", "passes": 2, "steps_per_epoch": 5})
    # Size is FLOPs at each model's own resolution (the teacher: resnet10t @32).
    rgb32 = InputSpec(32, (0.5,) * 3, (0.5,) * 3)
    with pytest.warns(UserWarning, match=r"MFLOPs per image at 32 px\) is smaller"):
        check_student_size(create_model("mobilenetv3_small_050", 10), rgb32, tiny_teacher)
    with pytest.warns(UserWarning, match="smaller than its teacher"):  # same model, lower res
        check_student_size(create_model("resnet10t", 10), InputSpec(24, rgb32.mean, rgb32.std),
                           tiny_teacher)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_student_size(create_model("resnet10t", 10), rgb32, tiny_teacher)
        # 0.27 M parameters against resnet10t's 4.9 M, but more compute at 32 px
        check_student_size(create_model("cifar_resnet20", 10, in_chans=1),
                           InputSpec(32, (0.5,), (0.5,), 1), tiny_teacher)


def _row(iteration: int, val: float | None, test: float, pile: int | None = None) -> dict:
    return {"iteration": iteration, "role": "teacher" if not iteration else f"student {iteration}",
            "val_top1": val, "test_top1": test, "unlabeled_images": pile}


def test_the_run_keeps_the_best_step_on_validation_and_says_when_a_student_falls():
    rows = [_row(0, 0.78, 0.78), _row(1, 0.70, 0.69, 2000), _row(2, 0.70, 0.66, 2000)]
    assert kept_row(rows) == 0  # both students below the teacher: the teacher is kept
    assert kept_row([_row(0, 0.7, 0.7), _row(1, 0.8, 0.8), _row(2, 0.8, 0.79)]) == 2  # tie: later
    assert kept_row([_row(0, None, 0.9), _row(1, None, 0.8)]) == 1  # no validation: the last
    line = regression(rows[0], rows[1], {"pretrained": "none", "passes": 10.0})
    assert line.startswith("student 1 ends below teacher on validation (70.00% < 78.00%)")
    assert "small unlabeled pile (2,000 images)" in line and "from scratch" in line
    assert "short" not in line
    assert regression(rows[0], _row(1, 0.80, 0.70), {"pretrained": "offline"}) is None
    line = regression(_row(0, None, 0.9), _row(1, None, 0.8, 50_000),
                      {"pretrained": "offline", "passes": 1.0})
    assert "on the test set" in line and "a short student (1 passes)" in line


def test_a_tie_on_validation_goes_to_the_lower_validation_loss():
    rows = [_row(0, 0.75, 0.72), _row(1, 0.85, 0.80), _row(2, 0.85, 0.74)]
    rows[0]["val_loss"], rows[1]["val_loss"], rows[2]["val_loss"] = 0.9, 0.5, 0.7
    assert kept_row(rows) == 1
    rows[2]["val_loss"] = 0.5
    assert kept_row(rows) == 2  # a full tie: the later step
    rows[0]["val_loss"] = None  # a run from before val_loss: top-1, then the later step
    assert kept_row(rows) == 2


def test_a_student_that_did_not_learn_is_named_so():
    teacher, student = _row(0, 0.75, 0.72), _row(2, 0.30, 0.28, 20_000)
    student.update(classes=10, train_ce=2.01)
    line = regression(teacher, student, {"pretrained": "none", "passes": 3.5})
    assert "did not converge (cross-entropy 2.01 at the end, 2.30 at chance)" in line
    student["train_ce"] = 1.1
    assert "converge" not in regression(teacher, student, {"pretrained": "none"})


def _paired(iteration: int, right: str) -> dict:
    row = _row(iteration, right.count("1") / len(right), 0.8)
    row.update(val_correct=right, val_images=len(right), classes=10)
    return row


def test_a_student_is_never_kept_below_its_teacher_on_validation():
    # The folder: 36/41 against the teacher's 37/41, one image apart: within chance,
    # but below the teacher, so the teacher stays kept.
    teacher = _paired(0, "1" * 37 + "0" * 4)
    below = _paired(1, "1" * 34 + "01" + "0" + "1" + "000")
    kept, comparisons, how = kept_step([teacher, below])
    assert kept == 0 and how.startswith("paired sign test on validation")
    sentence = comparisons[0].sentence()
    assert "student 1 36/41 against teacher 37/41" in sentence
    assert "never kept below its teacher; teacher stays kept" in sentence
    # A forced collapse: the teacher alone right on 8 images, the student alone on none.
    worse = _paired(1, "0" * 8 + "1" * 29 + "0" * 4)
    assert kept_step([teacher, worse])[0] == 0
    line = regression(teacher, worse, {"pretrained": "offline"}, kept_step([teacher, worse])[1][0])
    assert "student 1 ends below teacher on validation (41 images) (70.73% < 90.24%)" in line


def test_between_students_the_later_is_kept_unless_worse_beyond_chance():
    teacher = _paired(0, "1" * 30 + "0" * 11)
    first = _paired(1, "1" * 37 + "0" * 4)
    second = _paired(2, "1" * 34 + "01" + "0" + "1" + "000")  # 36/41: one behind student 1
    kept, comparisons, _ = kept_step([teacher, first, second])
    assert kept == 2 and comparisons[1].later_kept
    assert "within chance (p = " in comparisons[1].sentence()
    # The same student 2, planned short (or far from its plan): it must be no worse.
    kept, comparisons, _ = kept_step([teacher, first, second], {2: "student 2, planned short,"})
    assert kept == 1 and comparisons[1].rule == STRICT
    assert "student 2, planned short, must be no worse to be kept; student 1 stays kept" in \
        comparisons[1].sentence()
    # A student 2 below the teacher is not kept, whatever student 1 did.
    fallen = _paired(2, "1" * 20 + "0" * 21)
    kept, comparisons, _ = kept_step([teacher, first, fallen])
    assert kept == 1 and comparisons[1].earlier == "teacher" and comparisons[1].kept == "student 1"


def test_on_few_validation_images_a_student_must_lead_its_teacher():
    # The one-core run that shipped a student 3.6 points below its teacher on test: 38
    # validation images, the student alone right on 3 and the teacher alone on 1.
    teacher = _paired(0, "1" * 30 + "0" * 4 + "1" + "000")
    ahead_by_two = _paired(1, "1" * 30 + "111" + "0" + "0" + "000")
    kept, comparisons, _ = kept_step([teacher, ahead_by_two])
    assert kept == 0 and comparisons[0].rule == AHEAD_OF_TEACHER
    assert comparisons[0].p_value == pytest.approx(5 / 16)
    assert "must lead its teacher (p <= 0.1; here 0.31); teacher stays kept" in \
        comparisons[0].sentence()
    # The odd folder's seed 1 (2026-12-07): alone on 3, the teacher on none (p = 0.125), and
    # 5.0 points below the teacher on test: not a clear lead.
    three_to_none = _paired(1, "1" * 30 + "0111" + "1" + "000")
    assert kept_step([teacher, three_to_none])[0] == 0
    clearly = _paired(1, "1" * 30 + "1111" + "1" + "000")  # alone on 4, the teacher on none
    assert kept_step([teacher, clearly])[0] == 1
    # On 100 images (one image a point) no lead is asked: a tie keeps the student...
    teacher, tied = _paired(0, "10" * 50), _paired(1, "01" * 50)
    kept, comparisons, _ = kept_step([teacher, tied])
    assert kept == 1 and comparisons[0].rule == AGAINST_TEACHER
    # One image behind is a coin's lead (the Fashion-MNIST run of 2026-12-07 whose students,
    # each 1 image behind on 100, were +1.95 and +2.26 on test), two are not.
    one_behind = _paired(1, "0" + "1" * 90 + "0" * 9)
    teacher = _paired(0, "1" * 91 + "0" * 9)
    kept, comparisons, _ = kept_step([teacher, one_behind])
    assert kept == 1 and "one image behind, a coin's lead (p = 0.50)" in \
        comparisons[0].sentence()
    two_behind = _paired(1, "00" + "1" * 89 + "0" * 9)
    kept, comparisons, _ = kept_step([teacher, two_behind])
    assert kept == 0 and "below the teacher on validation by more than one image" in \
        comparisons[0].sentence()
    teacher = _paired(0, "10" * 50)
    # ...unless it trained fewer passes than a student needs: then it must lead there too.
    why = {1: "student 1, which trained 1.58 passes, under the 2 a student needs,"}
    kept, comparisons, _ = kept_step([teacher, tied], why)
    assert kept == 0 and comparisons[0].rule == AHEAD_OF_TEACHER
    assert comparisons[0].sentence().endswith(
        "student 1, which trained 1.58 passes, under the 2 a student needs, must lead its "
        "teacher (p <= 0.1; here 0.54); teacher stays kept")


def test_a_student_that_trained_fewer_passes_than_planned_is_trusted_past_enough(tmp_path):
    """A slower hour than the cached speeds buys a student fewer passes than its plan in the
    same minutes: past the passes where a from-scratch student gains all it can, it is a
    student like any other; under them, it must lead its teacher (--budget 30m, seed 3,
    2026-12-07: 6.39 of 9.53 passes, 1.48 points above its teacher on test, the teacher kept)."""
    info = {"seconds": {"iter1/student": 375.0, "iter2/student": 234.0}, "short": [],
            "least_passes": {"iter1/student": 2.0, "iter2/student": 2.0},
            "enough_passes": {"iter1/student": 6.0, "iter2/student": 6.0}}
    runs.write_json(tmp_path / "plan.json", info)
    runs.write_json(tmp_path / "timings.json", {"iter1/student": 372.0, "iter2/student": 230.0})
    for k, planned, trained in ((1, 9.53, 6.39), (2, 3.90, 2.36)):
        student = tmp_path / f"iter{k}" / "student"
        runs.write_yaml(student / runs.CONFIG, {"minutes": 6.0, "passes": planned})
        runs.write_json(student / runs.METRICS, {"passes": trained})
    assert untrusted_steps(tmp_path, 2) == {
        2: "student 2, which trained 2.36 passes of the 3.90 planned,"}
    # A plan that did not say what is enough (a pretrained student's): 30% short is untrusted.
    del info["enough_passes"]
    runs.write_json(tmp_path / "plan.json", info)
    assert set(untrusted_steps(tmp_path, 2)) == {1, 2}


@pytest.mark.parametrize("per_class", [10, 25, 100])
def test_a_collapsed_student_is_not_kept_at_any_label_count(per_class):
    """A student trained on shuffled labels (right by chance, 10%) against a 70% teacher, on
    the validation images the plan holds out of ``per_class`` labels a class."""
    import numpy as np

    from noisystudent.plan.checks import validation_per_class

    images = 10 * validation_per_class(per_class)
    rng = np.random.default_rng(per_class)
    teacher = _paired(0, "".join("1" if r < 0.7 else "0" for r in rng.random(images)))
    collapsed = _paired(1, "".join("1" if r < 0.1 else "0" for r in rng.random(images)))
    assert kept_step([teacher, collapsed])[0] == 0


def test_the_sign_test_is_exact_for_a_few_images_and_close_beyond():
    assert worse_by_chance(5, 0) == 1 / 32
    assert worse_by_chance(3, 2) == 0.5
    assert worse_by_chance(0, 0) == 1.0
    assert worse_by_chance(600, 500) == pytest.approx(
        sum(math.comb(1100, i) for i in range(600, 1101)) / 2 ** 1100, rel=0.02)
