"""What a run measured and shows: test metrics (``metrics``, ``evaluate``), corruption
robustness (``robustness``), the self-training report (``report``), report.html
(``review``), TensorBoard scalars (``tensorboard``)."""
