"""docs/settings.md's reference is the code's: every setting's name, flag, default, help and
whether the plan sets it, written by noisystudent/settings_page.py. A setting renamed, added or
re-documented in config.py fails here until the page is written again:

    NOISYSTUDENT_WRITE_DOCS=1 python -m pytest tests/test_settings_page.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from noisystudent import settings_page
from noisystudent.core.config import StudentSettings, TrainSettings

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "settings.md"


def test_the_settings_page_is_the_code():
    page = PAGE.read_text(encoding="utf-8")
    expected = settings_page.rewritten(page)
    if page != expected and os.environ.get("NOISYSTUDENT_WRITE_DOCS"):
        PAGE.write_text(expected, encoding="utf-8")
        page = expected
    assert page == expected, ("docs/settings.md differs from the settings in config.py; "
                              "rewrite it: NOISYSTUDENT_WRITE_DOCS=1 python -m pytest "
                              "tests/test_settings_page.py")


def test_a_renamed_setting_fails_the_page(monkeypatch):
    """Shown once: the page written before a rename no longer matches the code after it."""
    page = PAGE.read_text(encoding="utf-8")
    fields = dict(StudentSettings.model_fields)
    fields["passes_over_pile"] = fields.pop("passes")
    monkeypatch.setattr(StudentSettings, "model_fields", fields)
    assert settings_page.rewritten(page) != page
    assert "| `passes_over_pile` | `--student.passes-over-pile` |" in settings_page.page_section()


def test_every_value_the_plan_sets_is_marked_planned():
    """The keys the plan sets (``plan.set("KEY", ...)`` in noisystudent/plan/) and the student
    settings the re-plan changes (plan/replan.py: passes, minutes, warm-up) are all in
    PLANNED."""
    source = "".join(path.read_text(encoding="utf-8")
                     for path in (ROOT / "noisystudent" / "plan").glob("*.py"))
    planned = set(re.findall(r"\.set\(\s*\"([a-z_.]+)\"", source))
    replan = (ROOT / "noisystudent" / "plan" / "replan.py").read_text(encoding="utf-8")
    changes = set(re.findall(r"\"(passes|minutes|warmup_epochs)\": ", replan))
    assert len(planned) > 10 and changes == {"passes", "minutes", "warmup_epochs"}
    assert planned | {f"student.{key}" for key in changes} <= settings_page.PLANNED
    for key in settings_page.PLANNED:  # each names a real setting
        section, _, name = key.rpartition(".")
        fields = {"": settings_page.SelfTrainConfig, "teacher": TrainSettings,
                  "student": StudentSettings,
                  "pseudo_label": settings_page.PseudoLabelSettings}[section].model_fields
        assert name in fields, key
