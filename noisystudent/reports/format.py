"""How numbers read in the reports (report.md, report.html, compression.md): one way each."""

from __future__ import annotations


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage, "n/a" where it is unknown."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def number(value: float | None, digits: int = 1) -> str:
    """A number (minutes, milliseconds) to ``digits`` decimals, "n/a" where it is unknown."""
    return "n/a" if value is None else f"{value:.{digits}f}"
