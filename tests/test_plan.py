"""The plan: unset values chosen from the data, the machine and a budget, each with its
reason; the user's values win; a budgeted run plans its students again from the time left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from noisystudent import plan
from noisystudent.cli import main
from noisystudent.core import runs, timings
from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.errors import UserError
from noisystudent.core.setting_types import parse_minutes
from noisystudent.core.settings_io import build, to_dict
from noisystudent.core.timings import Budget
from noisystudent.plan import prices, rates, recipes, replan, students
from noisystudent.plan import teacher as teacher_rules

from .conftest import needs_fashion_mnist, write_image_tree


class FixedRates(plan.Rates):
    """A machine of known speed: images/s per model (training; inference is 4x)."""

    def __init__(self, speeds: dict[str, float]):
        super().__init__()
        self.speeds = speeds

    def training(self, model, size, in_chans, batch, options=None):
        return self.speeds[model] * (64 / size) ** 2

    def inference(self, model, size, in_chans, options=None):
        return 4 * self.training(model, size, in_chans, 1)

    def onnx_speedup(self, runtime, images, labeler=None):
        return super().onnx_speedup(runtime, images)  # the dtype's low, not this machine's cache


@pytest.mark.parametrize("text, minutes", [("45m", 45), ("2h", 120), ("1h30m", 90),
                                           ("90s", 1.5), ("20", 20), (15, 15), ("2.5h", 150)])
def test_budget_reads_hours_minutes_and_seconds(text, minutes):
    assert parse_minutes(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["soon", "0m", "-5", "", "5x"])
def test_a_bad_budget_is_one_line(text, capsys):
    assert main(["self-train", "--budget", text, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("noisystudent: error: ") and "budget" in err and "\n" not in err


def test_fashion_mnist_gets_the_airbench_students_and_a_64px_teacher():
    planned = plan.make_plan({})
    assert planned.facts.stored_size == 28 and planned.facts.grayscale
    assert planned.facts.pile == 59_000 and planned.facts.labeled == 900
    assert planned.values["teacher.image_size"] == 64
    assert planned.values["student.model"] == "cifar_airbench_s"
    assert planned.values["student.image_size"] == 28 and planned.values["student.in_chans"] == 1
    assert planned.values["iterations"] == 2
    assert planned.values["students"] == [{}, {"passes": 4.0, "warmup_epochs": 0.5}]
    assert all(planned.reasons[key] for key in planned.values)


def test_a_small_pile_gets_pretrained_students_of_the_teachers_size():
    planned = plan.make_plan({"labels_per_class": 5000})  # 6,000 a class: 1,000 left each
    assert planned.facts.pile == 10_000
    assert planned.values["student.model"] == "tf_efficientnet_lite0"
    assert planned.values["student.pretrained"] == "offline"
    assert planned.values["student.image_size"] == planned.values["teacher.image_size"] == 64
    assert "small" in planned.reasons["student.model"]


@needs_fashion_mnist
def test_a_folder_is_surveyed_for_size_colour_and_pile(tmp_path):
    from PIL import Image

    labeled = write_image_tree(tmp_path / "labeled", "train", 10)
    pile = tmp_path / "pile" / "nested"
    pile.mkdir(parents=True)
    for i in range(30):  # colour photos of 100 px
        Image.new("RGB", (100, 120), (200, 40, 10 + i)).save(pile / f"{i}.jpg")
    planned = plan.make_plan({"data": str(labeled), "unlabeled": str(tmp_path / "pile"),
                              "labels_per_class": 0})
    facts = planned.facts
    # 10% would be 1 validation image a class: the guard holds out 3 of each class's 10.
    assert (facts.classes, facts.labeled, facts.val, facts.pile) == (3, 21, 9, 30)
    assert planned.values["val_fraction"] == 0.3
    assert "the guard: 9 labeled images held out" in planned.reasons["val_fraction"]
    assert not facts.grayscale and "channels" not in planned.values
    assert planned.values["teacher.image_size"] == 128  # 12 sampled at 28 px, 30 at 100
    assert planned.values["student.model"] == "tf_efficientnet_lite0"  # 30 images: small pile
    gray = plan.make_plan({"data": str(labeled), "labels_per_class": 5})
    assert gray.values["channels"] == 1 and gray.facts.pile == 15


def test_the_users_values_win_and_are_marked():
    given = {"iterations": 1, "student": {"model": "cifar_resnet20", "passes": 12},
             "teacher": {"image_size": 96}}
    config, planned = plan.planned_config(given)
    assert config.iterations == 1 and config.teacher.image_size == 96
    assert config.student.model == "cifar_resnet20" and config.student.passes == 12
    assert not {"iterations", "student.model", "student.passes",
                "teacher.image_size"} & set(planned.values)
    assert planned.values["student.pretrained"] == "none"  # a small-image model: no weights
    text = plan.annotated_yaml(to_dict(config), planned)
    lines = text.splitlines()
    assert "iterations: 1  # set by you" in lines
    assert "  image_size: 96  # set by you" in lines
    assert any(line.startswith("  pretrained: none  # plan: ") for line in lines)
    assert yaml.safe_load(text) == to_dict(config)  # the comments keep it valid YAML


def test_shipped_configs_are_unchanged_by_the_plan():
    from pathlib import Path

    from noisystudent.core.settings_io import load_config, read_yaml
    for path in sorted(Path(__file__).parents[1].glob("configs/**/*.yaml")):
        config, _ = plan.planned_config(read_yaml(path))
        assert to_dict(config) == to_dict(load_config(SelfTrainConfig, path)), path.name


def test_a_replay_of_every_value_is_unchanged_by_the_plan():
    """A run's replay.yaml writes every value, ``student_models: []`` among them: the plan
    sets nothing over it (an empty list of models is no model chosen)."""
    every = to_dict(SelfTrainConfig(student={"model": "cifar_airbench_s", "pretrained": "none",
                                             "image_size": 28}))
    assert every["student_models"] == [] and every["budget"] is None
    config, planned = plan.planned_config(every)
    assert to_dict(config) == every and not planned.values


RATES = {"tf_efficientnet_lite0": 60.0, "cifar_airbench_s": 500.0, "cifar_resnet20": 250.0}


def test_a_budget_fits_the_students_into_what_is_left():
    planned = plan.make_plan({"budget": "30m"}, FixedRates(RATES))
    assert planned.values["iterations"] == 2
    total = sum(planned.seconds.values())
    aimed = Budget(30).usable
    assert aimed * 0.95 <= total <= aimed * 1.001  # used, not idle
    assert planned.values["students"][1]["passes"] > planned.values["student.passes"]
    assert set(planned.seconds) == {"iter0-teacher", "iter1/pseudo-labels", "iter1/student",
                                    "iter2/pseudo-labels", "iter2/student", "report",
                                    "report-corruptions", "plan"}


def test_a_budget_too_small_says_so(caplog):
    with pytest.raises(UserError, match=r"a budget of 1 min is too short to train a teacher "
                       r"on this machine: .* give at least --budget \d+m"):
        plan.make_plan({"budget": "1m"}, FixedRates(RATES))
    with pytest.raises(UserError, match="a budget of 30 s is too short"):
        plan.make_plan({"budget": "30s"})  # before any model is timed
    # A teacher fits, no student would pay: the teacher alone, with the whole budget, and
    # one line that says from what budget a student would.
    alone = plan.make_plan({"budget": "3m"}, FixedRates(RATES))
    assert alone.values["iterations"] == 0 and "no student pays" in alone.reasons["iterations"]
    assert "under the 2 a student from scratch needs" in alone.reasons["iterations"]
    assert "pseudo_label.max_images" not in alone.values
    assert sum(alone.seconds.values()) <= Budget(3).usable
    assert "a student pays from about" in caplog.text


def test_no_student_after_a_teacher_cut_under_half_its_epochs():
    """A fast student and a slow teacher in a short budget: the ladder's smallest rung cut to
    make room for a student would leave a teacher too short for its student to beat the
    teacher trained alone (one core, 3m: 85.39% and 84.16% against 85.74% and 85.22%)."""
    rates = FixedRates({**RATES, "tf_efficientnet_lite0": 80.0, "cifar_airbench_s": 1000.0})
    alone = plan.make_plan({"budget": "3m"}, rates)
    assert alone.values["iterations"] == 0
    assert "its teacher would get 5 of 30 epochs" in alone.reasons["iterations"]
    assert "teacher.minutes" in alone.values  # the teacher alone fills the budget
    given = plan.make_plan({"budget": "3m", "iterations": 1}, rates)  # the user's word wins
    assert given.value("iterations") == 1
    assert given.value("teacher.epochs") < recipes.SHORTEST_TEACHER * 30


def test_a_short_from_scratch_student_gets_at_least_60_warmup_steps():
    long = plan.make_plan({}, FixedRates(RATES))  # 3 passes: about the recipe's 0.5 epochs
    assert 0.5 <= long.values["student.warmup_epochs"] <= 0.55
    short = {"batch_size": 128, "unlabeled_ratio": 3, "epochs": 4, "warmup_epochs": 0.5}
    warmup = students.warmup_epochs(short, 4, 20_000)
    steps = 4 * 20_000 / (128 * 3)
    assert warmup / 4 * steps == pytest.approx(recipes.MIN_WARMUP_STEPS, abs=1)
    assert students.warmup_epochs(short, 0.1, 20_000) == 2  # half the epochs: the decay keeps half
    given = plan.make_plan({"budget": "8m", "student": {"warmup_epochs": 0.25}},
                           FixedRates(RATES))
    assert "student.warmup_epochs" not in given.values


def test_a_budget_lowers_the_teachers_size_to_fit():
    rates = FixedRates(RATES)
    big = {"data": "fashion-mnist", "budget": "10h"}
    facts = plan.DataFacts(labeled=900, val=100, test=10_000, classes=10, pile=59_000,
                           stored_size=150, grayscale=False)
    sizes = teacher_rules.teacher_sizes(facts)
    assert sizes == [160, 128, 96, 64]
    assert teacher_rules.teacher_sizes(facts, upscale=recipes.TEACHER_UPSCALE) == [160, 128, 96, 64]
    planned = plan.make_plan(big, rates)
    # 28 px images, upscaled as far as the ladder goes, labels averaged over the mirror.
    assert planned.values["teacher.image_size"] == recipes.TEACHER_UPSCALE
    assert planned.values["pseudo_label.flip"] is True
    assert "flip" not in plan.make_plan({**big, "teacher": {"augment": "none"}},
                                        rates).values
    small = plan.make_plan({"budget": "3m"}, rates)
    assert small.values["teacher.epochs"] < 30
    assert small.values["teacher.image_size"] == 64 and not small.values["pseudo_label.flip"]


def test_a_larger_budget_buys_a_larger_teacher():
    rates = FixedRates(RATES)
    rungs = [(p.values["teacher.image_size"], p.values["pseudo_label.flip"])
             for p in (plan.make_plan({"budget": b}, rates) for b in ("10m", "30m", "60m",
                                                                      "2h"))]
    assert rungs == sorted(rungs) and len(set(rungs)) > 2
    assert plan.make_plan({}).values["pseudo_label.flip"] is True  # no budget: the cheap one


def test_a_budget_long_enough_grows_the_student():
    rates = FixedRates(RATES)
    short, long = (plan.make_plan({"budget": b}, rates) for b in ("30m", "3h"))
    assert short.values["student.model"] == "cifar_airbench_s"
    assert "target_temperature" not in short.values["students"][1]
    assert long.values["student.model"] == "cifar_resnet20"
    assert long.values["student.passes"] >= recipes.LARGE_STUDENT_PASSES
    assert long.values["student.lr"] == 0.1 and long.values["student.model_options"] == {}
    assert long.values["students"][1]["target_temperature"] == 0.5
    assert "passes (>= 8)" in long.reasons["student.model"]
    total = sum(long.seconds.values())  # planned at the larger student's speed
    assert total <= Budget(180).usable * 1.001
    given = plan.make_plan({"budget": "3h", "student": {"model": "cifar_airbench_s"}}, rates)
    assert "student.model" not in given.values and "student.lr" not in given.values
    photos = plan.make_plan({"budget": "3h", "labels_per_class": 5000}, rates)  # small pile
    assert photos.values["student.model"] == "tf_efficientnet_lite0"


def test_students_of_two_models_are_each_priced_at_their_own_speed(tmp_path, monkeypatch):
    """``student_models`` under a budget: each student's passes at its own model's speed (the
    section's default model priced them all before, and the pile was cut for it), the run
    within the budget, and the re-plan before each student gives the plan's passes."""
    rates = FixedRates(RATES)  # cifar_resnet20 trains at half cifar_airbench_s's speed
    given = {"budget": "30m", "student_models": ["cifar_airbench_s", "cifar_resnet20"]}
    planned = plan.make_plan(given, rates)
    assert [prices.planned_student(planned, k).model for k in (1, 2)] == given["student_models"]
    passes = [planned.values["student.passes"], planned.values["students"][1]["passes"]]
    assert passes[1] / passes[0] == pytest.approx(4 / 3 * 250 / 500, rel=0.01)  # 3:4 of the time
    assert Budget(30).usable * 0.95 <= sum(planned.seconds.values()) <= Budget(30).usable * 1.001

    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: rates)
    config, run, pile = build(SelfTrainConfig, planned.merged()), tmp_path / "run", \
        planned.facts.pile
    replan.save(run, planned, config)
    done = ["report-corruptions", "iter0-teacher", "plan"]
    for k in (1, 2):
        done.append(f"iter{k}/pseudo-labels")
        runs.write_json(run / "timings.json", {key: planned.seconds[key] for key in done})
        runs.write_json(run / f"iter{k}" / "pseudo-labels" / "summary.json",
                        {"selected": pile, "unlabeled_images": pile})
        assert replan.replan_student(config, run, k)["passes"] == pytest.approx(
            passes[k - 1], abs=0.01)
        done.append(f"iter{k}/student")


def test_print_config_shows_the_plan_without_out(capsys):
    assert main(["self-train", "--print-config", "--iterations", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# plan: 900 labeled images")
    assert "iterations: 1  # set by you" in out
    assert "  model: cifar_airbench_s  # plan: the images are small" in out


@pytest.mark.parametrize("kind, says", [("AVX2", "no bf16 units"),
                                         ("AVX-512 BF16", "faster of fp32 and bf16")])
def test_the_plan_names_the_cpu_kind_it_was_timed_on(kind, says, monkeypatch):
    monkeypatch.setattr(rates, "cpu_kind", lambda: kind)
    monkeypatch.setattr(rates, "has_bf16_units", lambda: kind in ("AMX", "AVX-512 BF16"))
    planned = plan.make_plan({"budget": "30m"}, FixedRates(RATES))
    header = plan.annotated_yaml(to_dict(build(SelfTrainConfig, planned.merged())), planned)
    assert "# plan: timed on this CPU: " in header and f", {kind}" in header and says in header


@pytest.mark.slow
@needs_fashion_mnist
def test_a_budgeted_run_plans_again_and_reports_planned_and_used_minutes(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    code = main(["self-train", "--out", str(run), "--quiet", "--budget", "2m",
                 "--labels-per-class", "4", "--no-corruptions",
                 "--teacher.model", "resnet10t", "--teacher.pretrained", "none",
                 "--teacher.image-size", "32", "--teacher.epochs", "1",
                 "--pseudo-label.max-images", "300", "--pseudo-label.threshold", "0",
                 "--student.model", "cifar_airbench_s", "--student.epochs", "1"])
    assert code == 0
    saved = json.loads((run / "plan.json").read_text())
    assert saved["budget_minutes"] == 2 and "student.passes" in saved["planned"]
    assert (run / "plan.yaml").read_text().startswith("# plan: ")
    report = runs.read_json(run / "report.json")
    steps = report["time"]["steps"]
    assert steps["iter1/student"]["planned_minutes"] > 0
    assert steps["iter1/student"]["used_minutes"] > 0
    assert "planned minutes" in (run / "report.md").read_text()
    # Student 1 was planned again from what the teacher and labeling left: its config holds
    # the planned length, not the one printed before the run.
    student = runs.read_yaml(run / "iter1" / "student" / "config.yaml")
    assert student["passes"] > 0
    assert runs.read_json(run / "timings.json")["plan"] > 0  # measuring counts
    assert report["time"]["used_minutes"] <= 2 * 1.05 + 0.5  # tiny run: start-up dominates


def test_fresh_rates_measure_again_and_cache_what_they_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path))
    speeds = iter([(100.0, 400.0), (150.0, 600.0)])
    monkeypatch.setattr(rates, "measure", lambda *args, **kwargs: next(speeds))
    assert plan.Rates().training("cifar_airbench_s", 28, 1, 512) == 100  # measured
    assert plan.Rates().training("cifar_airbench_s", 28, 1, 512) == 100  # cached
    fresh = plan.Rates(fresh=True)  # a first student's: the machine may have drifted
    assert fresh.training("cifar_airbench_s", 28, 1, 512) == 150
    assert fresh.inference("cifar_airbench_s", 28, 1) == 600  # once per Rates
    assert plan.Rates().training("cifar_airbench_s", 28, 1, 512) == 150


def test_the_report_shrinks_its_corruption_test_when_time_ran_short(tmp_path):
    config = SelfTrainConfig(budget=10, corruption_images=1000)
    runs.write_json(tmp_path / "plan.json", {"budget_minutes": 10,
                                             "planned": ["corruption_images"],
                                             "seconds": {"report": 60.0}})
    runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 570.0})  # 30 s left
    assert plan.replan_report(config, tmp_path).corruption_images == 500
    runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 595.0})  # 5 s left
    assert plan.replan_report(config, tmp_path).corruptions is False
    runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 100.0})  # time enough
    assert plan.replan_report(config, tmp_path) is config
    runs.write_json(tmp_path / "plan.json", {"budget_minutes": 10, "planned": [],
                                             "seconds": {"report": 60.0}})
    runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 595.0})
    assert plan.replan_report(config, tmp_path) is config  # the user's own size stays


def test_on_a_slow_hour_the_report_is_priced_at_the_pace_the_fixed_steps_ran(tmp_path):
    """The teacher and the labelings are fixed work, as the report is: where they ran slower
    than priced, the report is priced as slow (a student's minutes are fitted, not priced);
    where they ran faster, the plan's price stays."""
    config = SelfTrainConfig(budget=10, corruption_images=1000)
    runs.write_json(tmp_path / "plan.json", {
        "budget_minutes": 10, "planned": ["corruption_images"],
        "seconds": {"iter0-teacher": 100.0, "iter1/student": 300.0, "report": 60.0}})
    runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 200.0, "iter1/student": 340.0})
    assert plan.replan_report(config, tmp_path).corruption_images == 500  # 60 s of 120 left
    runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 50.0, "iter1/student": 490.0})
    assert plan.replan_report(config, tmp_path) is config  # 60 s left, as priced


def test_on_a_slow_hour_the_last_student_leaves_the_report_its_slower_minutes(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: FixedRates(RATES))
    minutes = {}
    for teacher_took in (60.0, 120.0):  # priced at 60 s: on time, then twice as slow
        config = _finished_iteration_1(tmp_path, student_seconds=100.0)
        info = runs.read_json(tmp_path / "plan.json")
        info["seconds"] = {"iter0-teacher": 60.0, "report": 30.0}
        runs.write_json(tmp_path / "plan.json", info)
        runs.write_json(tmp_path / "iter2" / "pseudo-labels" / "summary.json",
                        {"selected": 20_000, "unlabeled_images": 20_000})
        used = runs.read_json(tmp_path / "timings.json")
        runs.write_json(tmp_path / "timings.json", {**used, "iter0-teacher": teacher_took,
                                                    "iter2/pseudo-labels": 40.0})
        minutes[teacher_took] = plan.replan_student(config, tmp_path, 2)["minutes"]
    # 60 s more spent, and the report priced at the teacher's pace: 60 s instead of 30 (the
    # passes are rounded to 0.01, about 1.3 s of a pass here)
    assert minutes[60.0] - minutes[120.0] == pytest.approx((60 + 30) / 60, abs=0.025)


def _finished_iteration_1(run, student_seconds: float) -> SelfTrainConfig:
    """A run with a 10 min budget whose teacher, labeling and student 1 are done."""
    config = SelfTrainConfig(budget=10, iterations=2, student={
        "model": "cifar_airbench_s", "pretrained": "none", "image_size": 28, "in_chans": 1,
        "passes": 3})
    runs.write_json(run / "plan.json", {"budget_minutes": 10, "planned": ["student.passes"],
                                        "facts": {"test": 1000, "val": 20},
                                        "seconds": {"report": 0.0}})
    runs.write_json(run / "iter1" / "pseudo-labels" / "summary.json",
                    {"selected": 20_000, "unlabeled_images": 20_000})
    student = run / "iter1" / "student"
    runs.write_json(student / "model.json", {"model": "cifar_airbench_s", "input": {"size": 28}})
    runs.write_text(student / "metrics.jsonl", '{"epoch": 1, "images_per_s": 200}\n')
    runs.write_json(run / "timings.json", {"iter0-teacher": 60.0, "iter1/pseudo-labels": 60.0,
                                           "iter1/student": student_seconds})
    return config


def test_a_finished_students_speed_is_the_next_plans_rate(tmp_path, monkeypatch):
    """A second's measurement on a shared machine can read half what a student then trains
    at for minutes: the student's own speed (its metrics.jsonl) replaces its model's cached
    training rate, as the bare step's (over STUDENT_STEP); the inference rate stays."""
    from noisystudent.plan import rates as rates_module
    from noisystudent.plan import time_model

    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rates_module, "measure", lambda *a, **k: (100.0, 900.0))
    config = _finished_iteration_1(tmp_path / "run", student_seconds=100.0)
    plan.remember_speed(config, tmp_path / "run", 1)  # nothing cached for it: nothing to mend
    assert not (tmp_path / "cache" / rates_module.RATES_FILE).exists()
    asked = ("cifar_airbench_s", 28, 1)
    assert plan.Rates().training(*asked, 512) == 100.0  # the plan's measurement, cached
    plan.remember_speed(config, tmp_path / "run", 1)  # it trained at 200 images/s
    monkeypatch.setattr(rates_module, "measure", lambda *a, **k: pytest.fail("measured"))
    again = plan.Rates()
    assert again.training(*asked, 512) == pytest.approx(
        200.0 / time_model.STUDENT_STEP["in memory"])
    assert again.inference(*asked) == 900.0


def test_a_labeling_through_onnx_runtime_teaches_the_next_plan_its_speed(tmp_path, monkeypatch):
    """The dtype's measured low prices ONNX Runtime until a labeling here measured it: then
    the labeler's own speedup over its cached PyTorch rate (a Zen 5 labeled at 3.5x bf16's
    rate, priced at 1.6x)."""
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rates, "measure", lambda *a, **k: (100.0, 400.0))
    monkeypatch.setattr(rates.labeling, "usable", lambda *a: True)  # ONNX Runtime labels here
    config = SelfTrainConfig(budget=10, teacher={"model": "tf_efficientnet_lite0",
                                                 "image_size": 64}, pseudo_label={"flip": True})
    labeler = ("tf_efficientnet_lite0", 64, 3, {})
    low = rates.labeling.SPEEDUP[rates.labeling.dtype_name(plan.Rates().labeling_device()[1])]
    assert plan.Rates().onnx_speedup("auto", 50_000, labeler) == low
    assert plan.Rates().inference(*labeler) == 400.0  # measured and cached
    summary = tmp_path / "run" / "iter1" / "pseudo-labels" / "summary.json"
    runs.write_json(summary, {"unlabeled_images": 10_000, "runtime": "torch",
                              "labeling_seconds": 60.0})
    plan.remember_labeling(config, tmp_path / "run", 1)  # PyTorch labeled: nothing to learn
    assert plan.Rates().onnx_speedup("auto", 50_000, labeler) == low
    runs.write_json(summary, {"unlabeled_images": 10_000, "runtime": "onnxruntime",
                              "labeling_seconds": replan.EXPORT_SECONDS + 20.0})
    plan.remember_labeling(config, tmp_path / "run", 1)
    # 20,000 views (the mirror too) in 20 s after the export: 1,000 a second, 2.5x PyTorch's
    assert plan.Rates().onnx_speedup("auto", 50_000, labeler) == pytest.approx(2.5)
    assert plan.Rates().inference(*labeler) == 400.0  # the PyTorch rate stays
    assert plan.Rates().onnx_speedup("auto", 50_000, ("cifar_airbench_s", 28, 1, {})) == low

def test_an_iteration_the_budget_cannot_pay_for_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: FixedRates(RATES))
    config = _finished_iteration_1(tmp_path, student_seconds=100.0)
    assert plan.worth_another(config, tmp_path, 2)  # about 2.1 passes left for student 2
    config = _finished_iteration_1(tmp_path, student_seconds=200.0)
    assert not plan.worth_another(config, tmp_path, 2)  # about 1.4: under the 2 it needs
    assert timings.planned(tmp_path)["dropped"] == 2


def test_a_labeled_student_short_of_its_minimum_trains_the_minutes_left(tmp_path, monkeypatch):
    """Its labels are made: between half and all of its minimum passes it trains (its pace
    decides, and keep.py asks it to lead its teacher); under half it is dropped."""
    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: FixedRates(RATES))
    for student_seconds, trains in ((200.0, True), (330.0, False)):
        config = _finished_iteration_1(tmp_path, student_seconds=student_seconds)
        runs.write_json(tmp_path / "iter2" / "pseudo-labels" / "summary.json",
                        {"selected": 20_000, "unlabeled_images": 20_000})
        used = runs.read_json(tmp_path / "timings.json")
        runs.write_json(tmp_path / "timings.json", {**used, "iter2/pseudo-labels": 40.0})
        changes = plan.replan_student(config, tmp_path, 2)
        if trains:  # about 1.3 passes: under the 2 a student from scratch needs
            assert 1.0 < changes["passes"] < 2.0 and changes["minutes"] > 2.5
            assert timings.planned(tmp_path)["least_passes"]["iter2/student"] == 2.0
        else:  # about 0.4
            assert changes is None and timings.planned(tmp_path)["dropped"] == 2


def test_a_student_is_planned_again_at_the_speed_its_predecessor_measured(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: FixedRates(RATES))
    config = _finished_iteration_1(tmp_path, student_seconds=100.0)
    runs.write_json(tmp_path / "iter2" / "pseudo-labels" / "summary.json",
                    {"selected": 20_000, "unlabeled_images": 20_000})
    used = runs.read_json(tmp_path / "timings.json")
    runs.write_json(tmp_path / "timings.json", {**used, "iter2/pseudo-labels": 40.0})
    changes = plan.replan_student(config, tmp_path, 2)
    # 0.97 x 600 s - 260 used - 3 s outside training (STUDENT_OVERHEAD) and its evaluation,
    # at 200 images/s over 26,667 a pass
    assert changes["passes"] == pytest.approx((0.97 * 600 - 260 - 3.1) / (26_667 / 200),
                                              abs=0.02)
    assert timings.planned(tmp_path)["seconds"]["iter2/student"] == pytest.approx(
        0.97 * 600 - 260, abs=2)
    assert "warmup_epochs" not in changes  # the plan did not set it
    info = timings.planned(tmp_path)
    runs.write_json(tmp_path / "plan.json", {**info, "planned": info["planned"] +
                                             ["student.warmup_epochs"]})
    changes = plan.replan_student(config, tmp_path, 2)  # 5 epochs of 64 + 3 x 64 images
    steps = changes["passes"] * 20_000 / (3 * 64)
    assert 0.5 < changes["warmup_epochs"] == pytest.approx(60 * 5 / steps, abs=0.01)


def test_flip_averaged_labels_are_not_taken_for_decoding(tmp_path, monkeypatch):
    """Labeling with flip-averaged labels runs the teacher twice an image; that second pass is
    no decoding, so it must not slow the first student's planned passes (it did: a 30m run's
    student 1 was planned at 460 images/s and trained 2.3 passes at 1,950)."""
    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: FixedRates(RATES))
    runs.write_json(tmp_path / "plan.json", {"budget_minutes": 30, "planned": ["student.passes"],
                                             "facts": {"test": 1000, "val": 0},
                                             "seconds": {"report": 0.0}})
    runs.write_json(tmp_path / "iter1" / "pseudo-labels" / "summary.json",
                    {"selected": 20_000, "unlabeled_images": 20_000})
    student = {"model": "cifar_airbench_s", "pretrained": "none", "image_size": 28,
               "in_chans": 1, "passes": 3}
    teacher = {"model": "tf_efficientnet_lite0", "image_size": 64}
    labeling = 20_000 / (4 * RATES["tf_efficientnet_lite0"])  # one view, nothing to decode
    passes = {}
    for flip in (False, True):
        config = SelfTrainConfig(budget=30, iterations=2, teacher=teacher, student=student,
                                 pseudo_label={"flip": flip})
        runs.write_json(tmp_path / "timings.json", {"iter0-teacher": 60.0,
                                                    "iter1/pseudo-labels": labeling * (1 + flip)})
        passes[flip] = plan.replan_student(config, tmp_path, 1)["passes"]
    # The same machine and time left but for the second view: about as many passes, and the
    # later labelings' second view (flip) a little fewer, never the third of them.
    assert passes[False] * 0.8 < passes[True] <= passes[False]


def test_the_plan_times_a_step_in_the_dtype_precision_auto_trains_in(tmp_path, monkeypatch):
    """On a CPU with bf16 instructions the stage trains in the measured faster dtype; the plan
    asks the same cached question, so both time (and train) the same step."""
    import torch

    from noisystudent.models import precision, speed

    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "has_bf16_units", lambda: True)
    timed = []

    def rate(model, shape, dtype, **_):
        timed.append(dtype)
        return 200.0 if dtype else 100.0

    monkeypatch.setattr(speed, "training_rate", rate)
    train, infer = rates.measure("cifar_resnet20", 16, 1, batch=8, options=None,
                                 device=torch.device("cpu"), precision="auto")
    assert train == 200.0 and infer > 0
    # precision auto times both dtypes, then the plan times the step in the one it picked
    assert timed == [None, torch.bfloat16] * precision.PROBE_ROUNDS + [torch.bfloat16] * 2
    cached = json.loads((tmp_path / precision.CACHE_FILE).read_text())
    (entry,) = cached.values()
    assert entry["dtype"] == "bf16" and json.loads(next(iter(cached)))["model"] == \
        "cifar_resnet20"
    # The stage's own question for that model, input and batch is the cached answer.
    assert precision.auto_training_dtype("cifar_resnet20", 16, 1, None, 8) is torch.bfloat16
    monkeypatch.setattr(speed, "training_rate", lambda *a, **k: pytest.fail("measured"))
    assert precision.auto_training_dtype("cifar_resnet20", 16, 1, {}, 8) is torch.bfloat16


def test_the_teacher_takes_the_minutes_a_fast_student_would_not_use():
    # A CPU whose small student is fast and whose teacher is slow (a Xeon's 8m plan gave the
    # teacher 10 of its 30 epochs and two students of 2.3 and 3 passes).
    rates = FixedRates({**RATES, "tf_efficientnet_lite0": 150.0, "cifar_airbench_s": 4000.0})

    def teacher_and_labels(planned):
        size, flip = planned.values["teacher.image_size"], planned.values["pseudo_label.flip"]
        return prices.teacher_seconds(planned, rates, size, planned.value("teacher.epochs")) \
            + prices.pile_seconds(planned, rates, size, flip)

    for budget, least in (("20m", recipes.ENOUGH_PASSES), ("6m", recipes.MIN_PASSES["scratch"])):
        grown = plan.make_plan({"budget": budget}, rates)
        share = recipes.TEACHER_SHARE * Budget(grown.budget_minutes).usable
        assert teacher_and_labels(grown) > share  # past the share ...
        assert grown.values["student.passes"] >= least  # ... where the student keeps its passes
        assert "past 35% of the budget" in grown.reasons["teacher.image_size"]
        why = grown.reasons["teacher.model"]  # one reason for the whole rung
        assert grown.reasons.get("teacher.epochs", why) == why
    assert grown.value("teacher.epochs") > 5
    # The user's lengths, and a pretrained student, leave the share as it was.
    for given in ({"students": [{}, {"passes": 3}]}, {"labels_per_class": 5000}):
        kept = plan.make_plan({"budget": "40m", **given}, rates)
        assert "past 35%" not in kept.reasons.get("teacher.image_size", "")


def test_bad_input_fails_in_one_line_before_any_model_is_timed(tmp_path, monkeypatch):
    from PIL import Image

    def no_timing(*args, **kwargs):
        raise AssertionError("a model was timed before the data were checked")

    monkeypatch.setattr(rates, "measure", no_timing)
    (tmp_path / "empty").mkdir()
    for name in ("cat", "dog"):
        (tmp_path / "two" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (i, 0, 0)).save(tmp_path / "two" / name / f"{i}.png")
    (tmp_path / "pile").mkdir()
    cases = {"no labeled images in": {"data": str(tmp_path / "empty")},
             "no unlabeled images in the labeled pool": {"data": str(tmp_path / "two")},
             "no unlabeled images in " + str(tmp_path / "pile"): {
                 "data": str(tmp_path / "two"), "unlabeled": str(tmp_path / "pile")},
             "too short to train a teacher": {"budget": "1s"}}
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "one" / "cat" / "0.png")
    cases["holds one class only"] = {"data": str(tmp_path / "one")}
    for message, given in cases.items():
        with pytest.raises(UserError, match=message):
            plan.make_plan({**given, "budget": given.get("budget", "5m")})


@pytest.mark.parametrize("recipe, yaml_file", [
    ("SCRATCH_STUDENT", "fashion-mnist-1000-airbench-cpu.yaml"),
    ("LARGE_SCRATCH_STUDENT", "fashion-mnist-1000-cpu.yaml")])
def test_the_plans_student_recipes_are_the_yaml_recipes_they_restate(recipe, yaml_file):
    """The plan's from-scratch students (plan/recipes.py) restate the measured YAML recipes in
    configs/: every setting they share must agree, so that the plan's numbers are the ones
    BENCHMARKS.md measured with the YAML."""
    from noisystudent.core.config import StudentSettings
    from noisystudent.core.settings_io import load_config

    config = load_config(SelfTrainConfig, str(Path(__file__).resolve().parents[1] / "configs" /
                                              yaml_file))
    student = config.student_config(1, "pending")
    for key, value in getattr(recipes, recipe).items():
        assert key in StudentSettings.model_fields, key
        assert getattr(student, key) == value, (recipe, key, getattr(student, key), value)
