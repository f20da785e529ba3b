"""Multi-label averages over the labels that occur.

torchmetrics' macro average precision and F1 give a label with no positive image in the evaluated split a
score of 0 and average it in: a label seen only in training, or one of thousands of tags absent from a small
validation split, drags the mean down for nothing the model did (a split with 4 of 2,176 tags present
scored mAP 0.0007). Here a macro mean is taken over the labels with at least one positive, and the others
are named, so a reader knows what the number covers.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import MultilabelAveragePrecision
from torchmetrics.utilities.data import dim_zero_cat


def present(targets: torch.Tensor) -> torch.Tensor:
    """(C,) bool: the labels with at least one positive among ``targets`` (N, C)."""
    return (targets == 1).any(0) if targets.numel() else torch.zeros(targets.shape[-1], dtype=torch.bool)


def present_mean(per_label: torch.Tensor | list[float], targets: torch.Tensor) -> float:
    """The mean of ``per_label`` over the labels that occur in ``targets`` (nan when none does)."""
    values = torch.as_tensor(per_label, dtype=torch.float64)
    keep = present(targets)
    return float(values[keep].mean()) if keep.any() else float("nan")


class PresentLabelsAP(MultilabelAveragePrecision):
    """Macro mean average precision over the labels with a positive in what was seen (validation's
    ``val_mAP``: what best.ckpt is chosen by). Synced across processes like its parent."""

    def __init__(self, num_labels: int, **kwargs):
        super().__init__(num_labels, average="none", **kwargs)

    def compute(self) -> torch.Tensor:
        per_label = super().compute()
        keep = present(dim_zero_cat(self.target))
        return per_label[keep].mean() if keep.any() else torch.tensor(float("nan"))
