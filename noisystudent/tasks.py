"""Tasks: each turns a batch into ``{"loss": ..., "logits": ..., <named parts>}`` for the loop."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


class SupervisedTask:
    """Cross-entropy with the true labels on the augmented view."""

    def __init__(self, model: torch.nn.Module, pipeline: Callable[[torch.Tensor], torch.Tensor],
                 label_smoothing: float = 0.0):
        self.model = model
        self.pipeline = pipeline
        self.label_smoothing = label_smoothing

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.model(self.pipeline(batch["images"]))
        loss = F.cross_entropy(logits.float(), batch["labels"],
                               label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits, "ce": loss.detach()}
