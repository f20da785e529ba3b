"""Out-of-fold predicted probabilities from cached backbone features: K folds, a linear head trained on
the other K-1 (full-batch L-BFGS with a strong L2 penalty on standardised features: calibrated rather
than confident, which ranks label issues better; 0.3 measured on food5), probabilities for the held-out
fold. Confident learning needs exactly this: every image scored by a model that never saw its label."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def folds(labels: list, k: int, seed: int) -> np.ndarray:
    """A fold index per image, stratified by class (multi-label: by the image's rarest label)."""
    rng = np.random.default_rng(seed)
    counts: dict[int, int] = {}
    for label in labels:
        for c in label if isinstance(label, tuple) else (label,):
            counts[c] = counts.get(c, 0) + 1
    key = [min(label, key=lambda c: counts[c]) if isinstance(label, tuple) and label else label for label in labels]
    out = np.zeros(len(labels), dtype=np.int64)
    for value in sorted({str(v) for v in key}):
        members = np.array([i for i, v in enumerate(key) if str(v) == value])
        rng.shuffle(members)
        out[members] = (np.arange(len(members)) + rng.integers(k)) % k
    return out


def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, multilabel: bool, weight_decay: float) -> nn.Linear:
    torch.manual_seed(0)
    head = nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(head(x), y) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def out_of_fold(
    features: np.ndarray,
    labels: list,
    classes: int,
    *,
    k: int = 5,
    seed: int = 0,
    extra: np.ndarray | None = None,
    weight_decay: float = 0.3,
) -> np.ndarray:
    """(N, classes) probabilities; ``features`` (N, D) is the view each image is scored on, ``extra``
    (N, V, D) more views (augmented) that only add training rows. Softmax, or sigmoid per label when the
    labels are tuples (multi-label)."""
    multilabel = any(isinstance(label, tuple) for label in labels)
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)  # standardised: one weight decay fits every backbone
    x = (x - mean) / std
    views = None if extra is None else (torch.from_numpy(np.asarray(extra, dtype=np.float32)) - mean) / std
    if multilabel:
        y = torch.zeros(len(labels), classes)
        for i, label in enumerate(labels):
            y[i, list(label)] = 1.0
    else:
        y = torch.tensor(labels)
    fold = folds(labels, k, seed)
    out = np.zeros((len(labels), classes), dtype=np.float32)
    for f in range(k):
        held = torch.from_numpy(fold == f)
        if not held.any():
            continue
        train_x, train_y = x[~held], y[~held]
        if views is not None:
            v = views[~held]
            train_x = torch.cat([train_x, v.reshape(-1, v.shape[-1])])
            train_y = torch.cat([train_y, train_y.repeat_interleave(v.shape[1], dim=0)])
        head = _fit(train_x, train_y, classes, multilabel, weight_decay)
        with torch.no_grad():
            logits = head(x[held])
            out[held.numpy()] = (logits.sigmoid() if multilabel else logits.softmax(1)).numpy()
    return out
