"""The plan printed: the config as YAML, each value the plan chose with its reason and each
value the user set marked, headed by what the plan saw and, under a budget, the minutes it
planned per step and the machine it timed (``--print-config``, ``plan.yaml``)."""

from __future__ import annotations

from typing import Any

import yaml

from .values import Plan

# The config's sections, whose keys the notes name dotted (``teacher.image_size``).
SECTIONS = ("teacher", "student", "pseudo_label", "finetune")


def annotated_yaml(config_values: dict[str, Any], plan: Plan) -> str:
    """The config as YAML, each planned value with its reason and each value the user set
    marked, headed by what the plan saw."""
    lines = [f"# plan: {plan.facts.describe()}"]
    if plan.budget_minutes is not None:
        total = sum(plan.seconds.values()) / 60
        lines.append(f"# plan: budget {plan.budget_minutes:g} min, planned {total:.1f} min: "
                     + ", ".join(f"{k} {v / 60:.1f}" for k, v in plan.seconds.items()))
        if plan.rates is not None:
            lines.append(f"# plan: {plan.rates.machine()}")
    given = flat_keys(plan.given)
    section = ""
    for line in yaml.safe_dump(config_values, sort_keys=False).splitlines():
        stripped = line.lstrip()
        key = stripped.split(":", 1)[0] if ":" in stripped and not stripped.startswith("-") \
            else None
        if key is None:
            lines.append(line)
            continue
        if line == stripped:
            section = key if stripped.endswith(":") and key in SECTIONS else ""
            dotted = key
        else:
            dotted = f"{section}.{key}" if section else key
        if dotted in plan.reasons:
            line += f"  # plan: {plan.reasons[dotted]}"
        elif dotted in given:
            line += "  # set by you"
        lines.append(line)
    return "\n".join(lines) + "\n"


def flat_keys(values: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        if isinstance(value, dict) and key in SECTIONS:
            keys |= flat_keys(value, prefix + key + ".")
        else:
            keys.add(prefix + key)
    return keys

