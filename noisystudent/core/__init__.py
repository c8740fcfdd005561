"""The foundation every command stands on: settings (``config``), the run directory and its
files (``runs``, ``layout``), the budget's clock (``timings``), which step a run keeps
(``keep``), devices and processes (``device``, ``distributed``) and the one-line errors
(``errors``). It knows no image, model or label."""
