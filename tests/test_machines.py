"""The plan on paper for machines this suite cannot run on: three machine classes' speeds fed
to the planner at 5 to 60 minutes on Fashion-MNIST (100 labels a class), and the invariants
every plan must keep. The table it builds is docs/plan.md's "What each machine gets"; set
NOISYSTUDENT_WRITE_DOCS=1 to rewrite it there after a change of the rules.

    python -m pytest tests/test_machines.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from noisystudent import plan
from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.runs import write_json
from noisystudent.core.settings_io import build
from noisystudent.core.timings import Budget
from noisystudent.plan import prices, recipes, replan

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plan.md"
BUDGETS = (5, 8, 10, 30, 60)

# (training, inference) images/s per (model, px) on 2 threads. The AVX2 and bf16 CPUs' are the
# plan's own measurements (a Zen 3 with AVX2 only, an Emerald Rapids Xeon with AMX, torch
# 2.14.1); the GPU's are a round guess of an H100's order of magnitude (the Lite0 step at batch
# 256 measured 10,600 images/s at 32 px): a GPU changes which rungs fit, not the rules.
MACHINES = {
    "2-core AVX2 CPU": {("tf_efficientnet_lite0", 64): (95, 420),
                        ("tf_efficientnet_lite0", 96): (54, 92),
                        ("cifar_airbench_s", 28): (580, 900),
                        ("cifar_resnet20", 28): (400, 969)},
    "2-core bf16 CPU": {("tf_efficientnet_lite0", 64): (181, 940),
                        ("tf_efficientnet_lite0", 96): (80, 420),
                        ("cifar_airbench_s", 28): (1413, 3502),
                        ("cifar_resnet20", 28): (790, 4586)},
    "GPU": {("tf_efficientnet_lite0", 64): (6000, 24000),
            ("tf_efficientnet_lite0", 96): (3000, 12000),
            ("cifar_airbench_s", 28): (30000, 90000),
            ("cifar_resnet20", 28): (20000, 80000)},
}


# The device and the dtype PyTorch labels in on each (what decides ONNX Runtime's labeling).
LABELS_ON = {"2-core AVX2 CPU": (torch.device("cpu"), None),
             "2-core bf16 CPU": (torch.device("cpu"), torch.bfloat16),
             "GPU": (torch.device("cuda"), torch.float16)}


class MachineRates(plan.Rates):
    """A machine of known speed: the table's rates, a size not in it scaled by its area."""

    def __init__(self, machine: str):
        super().__init__()
        self.table, self.labels_on = MACHINES[machine], LABELS_ON[machine]

    def labeling_device(self):
        return self.labels_on

    def cores(self):
        return 2

    def _rates(self, model: str, size: int) -> tuple[float, float]:
        if (model, size) in self.table:
            return self.table[model, size]
        known = min((s for m, s in self.table if m == model), key=lambda s: abs(s - size))
        train, infer = self.table[model, known]
        return train * (known / size) ** 2, infer * (known / size) ** 2

    def training(self, model, size, in_chans, batch, options=None):
        return self._rates(model, size)[0]

    def inference(self, model, size, in_chans, options=None):
        return self._rates(model, size)[1]

    def onnx_speedup(self, runtime, images, labeler=None):
        return super().onnx_speedup(runtime, images)  # the dtype's low, not this machine's cache


def plans(machine: str) -> dict[int, plan.Plan]:
    return {b: plan.make_plan({"budget": f"{b}m"}, MachineRates(machine))
            for b in BUDGETS}


def row(machine: str, minutes: int, planned: plan.Plan) -> str:
    value = planned.value
    count = value("iterations")
    passes = [value("student.passes")] + [s["passes"] for s in (value("students") or [])[1:]]
    students = "teacher alone" if not count else ", ".join(
        f"{value('student.model')} {p:g}" for p in passes[:count])
    pile = f"{value('pseudo_label.max_images') or planned.facts.pile:,}" if count else "none"
    total = sum(planned.seconds.values()) / 60
    return (f"| {machine} | {minutes}m | Lite0 @{planned.teacher_size()}, "
            f"{value('teacher.epochs')} epochs{', flip' if value('pseudo_label.flip') else ''} "
            f"| {pile} | {students} | {total:.1f} ({total / minutes:.0%}) |")


@pytest.mark.parametrize("machine", list(MACHINES))
def test_every_machine_gets_a_plan_that_keeps_the_invariants(machine):
    by_budget = plans(machine)
    teachers: dict[bool, list] = {False: [], True: []}  # by whether students are planned
    for minutes, planned in by_budget.items():
        total = sum(planned.seconds.values())
        assert total <= Budget(minutes).seconds  # never more than the budget
        count = planned.value("iterations")
        if count:  # students fill the budget; a teacher alone has nothing to fill it with
            assert total >= 0.95 * Budget(minutes).seconds, (minutes, total)
            family = "scratch" if prices.scratch(planned) else "pretrained"
            passes = [planned.value("student.passes")] + [
                s["passes"] for s in (planned.value("students") or [])[1:]]
            assert min(passes[:count]) >= recipes.MIN_PASSES[family], (minutes, passes)
        teachers[bool(count)].append((planned.teacher_size(), planned.value("teacher.epochs"),
                                      bool(planned.value("pseudo_label.flip"))))
    # Never a smaller teacher for more time, except where a student first pays: a teacher
    # alone has the whole budget, and one with a student gives it the minutes (a short
    # teacher's student is not planned: recipes.SHORTEST_TEACHER).
    for kind in teachers.values():
        assert kind == sorted(kind), teachers


def test_the_machine_table_in_the_docs_is_the_plans():
    lines = ["| machine | budget | teacher | images labeled | students (passes) | planned "
             "minutes |", "| --- | --- | --- | ---: | --- | ---: |"]
    for machine in MACHINES:
        lines += [row(machine, b, p) for b, p in plans(machine).items()]
    table = "\n".join(lines)
    text = DOCS.read_text()
    block = re.compile(r"(<!-- machines -->\n).*?(\n<!-- /machines -->)", re.S)
    if os.environ.get("NOISYSTUDENT_WRITE_DOCS"):
        DOCS.write_text(block.sub(lambda m: m.group(1) + table + m.group(2), text))
        text = DOCS.read_text()
    found = block.search(text)
    assert found and table in found.group(0), \
        "docs/plan.md's machine table is not the plans': run NOISYSTUDENT_WRITE_DOCS=1 pytest " \
        "tests/test_machines.py"


def test_plan_and_replan_give_a_student_the_same_minutes(tmp_path, monkeypatch):
    """The first plan and the re-plan before student 1, fed the same rates, the teacher and
    labeling as planned: the same passes and minutes."""
    rates = MachineRates("2-core AVX2 CPU")
    monkeypatch.setattr(replan, "Rates", lambda *args, **kwargs: rates)
    for minutes in (8, 30):
        run = tmp_path / f"{minutes}m"
        planned = plan.make_plan({"budget": f"{minutes}m"}, rates)
        config = build(SelfTrainConfig, planned.merged())
        replan.save(run, planned, config)
        seconds = planned.seconds
        write_json(run / "timings.json", {key: seconds[key] for key in
                                          ("report-corruptions", "iter0-teacher",
                                           "iter1/pseudo-labels", "plan")})
        pile = planned.facts.pile
        write_json(run / "iter1" / "pseudo-labels" / "summary.json",
                   {"selected": pile, "unlabeled_images": pile})
        changes = replan.replan_student(config, run, 1)
        assert changes["passes"] == pytest.approx(planned.values["student.passes"], abs=0.01)
        replanned = replan.timings.planned(run)["seconds"]["iter1/student"]
        assert replanned == pytest.approx(seconds["iter1/student"], rel=0.005)
