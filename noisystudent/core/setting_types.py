"""The value types settings are read as, each coerced and checked when read: durations
("45m", "1h30m"), comma-separated lists, KEY=VALUE model options, 1 or 3 channels; and
``setting``, a field with its help text and range."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field


def setting(default: Any = None, help: str = "", **constraints: Any) -> Any:
    """A field with its help text (shown by ``--help``) and its range (``ge``, ``gt``, ...)."""
    if isinstance(default, (list, dict, BaseModel)):  # each config its own copy
        return Field(default_factory=lambda: _copy(default), description=help, **constraints)
    return Field(default, description=help, **constraints)


def _copy(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_copy(deep=True)
    return dict(value) if isinstance(value, dict) else list(value)


def _number_text(value: Any) -> Any:
    # The command line gives text; a choice among numbers (channels: 1 or 3) takes "3" too.
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _comma_list(value: Any) -> Any:
    # From the command line: --student-models a,b,c
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _scalar(value: Any) -> Any:
    # "true", "0.4", "max" from the command line: the YAML scalar they spell.
    if isinstance(value, str):
        import yaml

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, (bool, int, float, str)) else value
    return value


def _options_text(value: Any) -> Any:
    # From the command line: --model-options flip_tta=true,bn_momentum=0.4
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError(f"expected KEY=VALUE pairs separated by commas, got {value!r}")
        value = {key.strip(): text.strip() for key, _, text in pairs}
    if isinstance(value, dict):
        return {key: _scalar(item) for key, item in value.items()}
    return value


def parse_minutes(value: Any) -> float:
    """A duration as minutes: "45m", "2h", "1h30m", "90s", or a number of minutes."""
    import re

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        minutes = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?"
                             r"(?:(\d+(?:\.\d+)?)s)?", text)
        if not text or parts is None:
            try:
                minutes = float(text)
            except ValueError:
                raise ValueError(f"expected a duration such as 45m, 2h or 1h30m; got "
                                 f"{value!r}") from None
        else:
            hours, mins, secs = (float(g) if g else 0.0 for g in parts.groups())
            minutes = 60 * hours + mins + secs / 60
    if not minutes > 0:
        raise ValueError(f"a duration must be positive; got {value!r}")
    return minutes


Channels = Annotated[Literal[1, 3], BeforeValidator(_number_text)]
Minutes = Annotated[float, BeforeValidator(parse_minutes)]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
NameList = Annotated[list[str], BeforeValidator(_comma_list)]
ModelOptions = Annotated[dict[str, bool | int | float | str], BeforeValidator(_options_text)]
