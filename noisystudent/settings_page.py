"""docs/settings.md's reference of every setting, written from the settings classes: each
setting's name, flag, default and help as ``--help`` shows them, and whether ``self-train
--budget`` plans it when you leave it unset. ``tests/test_settings_page.py`` fails when the
page and the code differ; ``NOISYSTUDENT_WRITE_DOCS=1`` rewrites the page's generated part
(between ``<!-- settings -->`` and ``<!-- /settings -->``).
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from .core.config import (
    DistillConfig,
    PseudoLabelSettings,
    SelfTrainConfig,
    SharedSettings,
    StudentSettings,
    TrainConfig,
    TrainSettings,
)
from .plan.recipes import LARGE_SCRATCH_STUDENT, SCRATCH_STUDENT

BEGIN, END = "<!-- settings -->", "<!-- /settings -->"

# What the plan of a budgeted self-train sets where you leave it unset (``plan.set`` in
# noisystudent/plan/, the from-scratch students' recipes, and the re-plan's changes to each
# student in plan/replan.py); a test reads the plan's source for the keys it sets and fails on
# one missing here.
PLANNED = frozenset({
    "channels", "corruption_images", "corruptions", "iterations", "labels_per_class",
    "val_fraction", "pseudo_label.flip", "pseudo_label.max_images", "teacher.model",
    "teacher.image_size", "teacher.epochs", "teacher.minutes", "student.model",
    "student.pretrained", "student.image_size", "student.in_chans", "student.passes",
    "student.warmup_epochs", "student.minutes", "students",
} | {f"student.{key}" for key in {**SCRATCH_STUDENT, **LARGE_SCRATCH_STUDENT}})

HEADER = ("| setting | flag | default | planned | what it does |\n"
          "| --- | --- | --- | --- | --- |")


def page_section() -> str:
    """The generated part of docs/settings.md, markers included."""
    parts = [BEGIN, "",
             "Written from `noisystudent/core/config.py` by `noisystudent/settings_page.py` "
             "(a test fails when they differ). The flag of a `self-train` section's setting is "
             "`--SECTION.FLAG` (e.g. `--student.passes`). \"planned\": under `self-train "
             "--budget`, a value you leave unset is chosen by the plan "
             "([The plan](plan.md)); `--print-config` shows it with its reason.", ""]
    parts += _table("Shared settings (every command; the top level of a self-train YAML)",
                    SharedSettings, "", own=SelfTrainConfig)
    parts += _table("Training: `train`, the `teacher` and `finetune` sections", TrainSettings,
                    "teacher.", intro="\"planned\": in `self-train`'s `teacher` section.")
    parts += ["`train` and `distill` also take `--out RUN_DIR`, `--config FILE.yaml`, "
              "`--resume` and `--quiet`.", ""]
    parts += _table("Distillation: `distill` (the training settings, plus)", DistillConfig, "",
                    only=set(DistillConfig.model_fields) - set(TrainConfig.model_fields))
    student_only = {name for name, info in StudentSettings.model_fields.items()
                    if name not in TrainSettings.model_fields or f"student.{name}" in PLANNED
                    or info.description != TrainSettings.model_fields[name].description}
    changed = [f"`{name}` {_default(info)}" for name, info in StudentSettings.model_fields.items()
               if name in TrainSettings.model_fields and name not in student_only
               and _default(info) != _default(TrainSettings.model_fields[name])]
    parts += _table("The student: the `student` section and `students` entries (the training "
                    "settings, plus)", StudentSettings, "student.", only=student_only,
                    flag_prefix="student.",
                    intro="The student's own defaults of the training settings: "
                    + ", ".join(changed) + ".")
    parts += _table("Pseudo-labels: `pseudo-label`, the `pseudo_label` section",
                    PseudoLabelSettings, "pseudo_label.")
    parts += ["The `pseudo-label` command also takes `--teacher RUN_DIR`, `--out DIR`, "
              "`--unlabeled PATH`, `--config`, and `precision`, `device` and `seed` (the seed of "
              "the random duplicates when balancing).", ""]
    parts += _table("`self-train`'s own settings (the top level)", SelfTrainConfig, "",
                    only=set(SelfTrainConfig.model_fields) - set(SharedSettings.model_fields)
                    - {"teacher", "pseudo_label", "student"})
    parts += ["`self-train` also takes `--out RUN_DIR`, `--resume` and `--quiet`. The sections "
              "`teacher`, `pseudo_label` and `student` take the tables above.", END]
    return "\n".join(parts) + "\n"


def rewritten(page: str) -> str:
    """``page`` with its generated part replaced by the code's."""
    start, end = page.index(BEGIN), page.index(END) + len(END) + 1
    return page[:start] + page_section() + page[end:]


def _table(title: str, cls: type[BaseModel], plan_prefix: str, *, only: set[str] | None = None,
           own: type[BaseModel] | None = None, intro: str = "",
           flag_prefix: str = "") -> list[str]:
    lines = [f"### {title}", ""] + ([intro, ""] if intro else []) + [HEADER]
    for name, info in cls.model_fields.items():
        if only is not None and name not in only:
            continue
        default, text = f"`{_default(info)}`", info.description
        other = own.model_fields.get(name) if own is not None else None
        if other is not None and other is not info:  # self-train's own default and help
            if _default(other) != _default(info):
                default += f" (`self-train`: `{_default(other)}`)"
            text = other.description
        planned = "yes" if plan_prefix + name in PLANNED else ""
        lines.append(f"| `{name}` | {_flag(name, info, flag_prefix)} | {default} | {planned} | "
                     f"{_escape(text)} |")
    return lines + [""]


def _flag(name: str, info, prefix: str = "") -> str:
    flag = "--" + prefix.replace("_", "-") + name.replace("_", "-")
    kind = info.annotation
    if typing.get_origin(kind) is list and any(
            isinstance(a, type) and issubclass(a, BaseModel) for a in typing.get_args(kind)):
        return "(YAML only)"
    if any(isinstance(a, type) and issubclass(a, BaseModel)
           for a in (kind, *typing.get_args(kind))):
        return f"`{flag}.KEY`"
    if kind is bool or kind == bool | None:
        return f"`{flag}` / `--no-{flag[2:]}`"
    return f"`{flag}`"


def _default(info) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, BaseModel):
        return "its section"
    if value == "" and "required" in (info.description or ""):
        return "(required)"
    return str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
