"""The plan: what ``self-train`` does with every setting the user left unset, chosen from the
data (how many images, how large, gray or colour), the machine (how fast it trains and runs
each model, measured once and cached) and, when given, a time budget. Every planned value
carries its reason; ``--print-config`` prints it beside the value and marks the values the
user set, which the plan never changes. A run with a budget plans again as it goes.

    survey.py      the data's facts, read without decoding it all
    rates.py       this machine's speed per model and input, measured once and cached
    time_model.py  how long each step takes and how the students share the time: the one
                   model both the plan and the re-planning use
    rules.py       the order in which the values are planned (``make_plan``,
                   ``planned_config``), from:
    values.py      the Plan: each planned value with its reason, over the user's
    recipes.py     the thresholds and the from-scratch students' recipes
    checks.py      the data checked before any model is timed; the guard's holdout
    teacher.py     the teacher ladder, its share of the budget, the teacher alone
    students.py    the students: from scratch or pretrained, the pile, their lengths
    prices.py      what each step costs, and what the time buys the students
    replan.py      a budgeted run on disk and during the run: each student planned again,
                   an iteration dropped, the corruption test shrunk
    notes.py       the plan printed as annotated YAML (``--print-config``, plan.yaml)
"""

from .notes import annotated_yaml
from .rates import Rates
from .replan import (
    remember_labeling,
    remember_speed,
    replan_report,
    replan_student,
    save,
    worth_another,
)
from .rules import make_plan, planned_config
from .survey import DataFacts
from .values import Plan

__all__ = ["DataFacts", "Plan", "Rates", "annotated_yaml", "make_plan", "planned_config",
           "remember_labeling", "remember_speed", "replan_report", "replan_student", "save",
           "worth_another"]
