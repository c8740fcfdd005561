"""The plan itself: the values it sets (dotted keys) with their reasons, over what the user
gave, and the facts and rates it was made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noisystudent.core.settings_io import apply_overrides
from noisystudent.core.timings import Budget

from .rates import Rates
from .survey import DataFacts


@dataclass
class Plan:
    """Planned values (dotted keys) with their reasons, over what the user ``given``."""

    given: dict[str, Any]
    facts: DataFacts
    budget: Budget | None = None
    typed: Any = None  # the config of the user's values alone (for their types)
    teacher: tuple[str, int] | None = None  # a teacher_run's (model, size)
    rates: Rates | None = None
    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # planned time per step
    short: list[str] = field(default_factory=list)  # students planned under their minimum
    whole_pile: int = 0  # the unlabeled images there are, where the plan labels fewer

    @property
    def budget_minutes(self) -> float | None:
        return self.budget.minutes if self.budget else None

    def value(self, key: str) -> Any:
        """What the run will use: the planned value where the plan set one, else the user's
        or the default (typed)."""
        if key in self.values:
            return self.values[key]
        node = self.typed
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def teacher_model(self) -> str:
        return self.teacher[0] if self.teacher else self.value("teacher.model")

    def teacher_size(self) -> int:
        return self.teacher[1] if self.teacher else self.value("teacher.image_size")

    def set(self, key: str, value: Any, reason: str) -> None:
        if _lookup(self.given, key) is _MISSING:
            self.values[key] = value
            self.reasons[key] = reason

    def user_set(self, key: str) -> bool:
        return _lookup(self.given, key) is not _MISSING

    def merged(self) -> dict[str, Any]:
        """The config's values: the planned ones, with the user's over them."""
        return apply_overrides(self.given, {k: v for k, v in self.values.items()})


_MISSING = object()


def _lookup(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node
