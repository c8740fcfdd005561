"""Classification metrics from logits: top-1, per-class accuracy, confusion matrix, ECE."""

from __future__ import annotations

import torch


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes ** 2).view(num_classes, num_classes)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            ece += gap * in_bin.float().mean()
    return ece.item()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor,
                           classes: list[str]) -> dict:
    probs = logits.float().softmax(1)
    predicted = probs.argmax(1)
    matrix = confusion_matrix(predicted, labels, len(classes))
    per_class = matrix.diag().float() / matrix.sum(1).clamp(min=1).float()
    return {
        "top1": (predicted == labels).float().mean().item(),
        "per_class": {name: per_class[i].item() for i, name in enumerate(classes)},
        "confusion": matrix.tolist(),
        "ece": expected_calibration_error(probs, labels),
    }


def nonzero_cells(matrix: list[list[int]]) -> list[list[int]]:
    """A confusion matrix as its nonzero [true, predicted, count] cells: at most one per test
    image, however many classes (metrics.json keeps it so)."""
    dense = torch.tensor(matrix)
    true, predicted = torch.nonzero(dense, as_tuple=True)
    return torch.stack([true, predicted, dense[true, predicted]], 1).tolist()


def dense_confusion(cells: list[list[int]], num_classes: int) -> torch.Tensor:
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for true, predicted, count in cells:
        matrix[true, predicted] = count
    return matrix
