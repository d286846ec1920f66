"""Losses an attack can climb: cross-entropy, and two that cannot saturate (margin, DLR).

Cross-entropy's gradient is `softmax - onehot`, which is exactly zero in float32 once the model is
confident enough (or its logits are scaled up), so PGD on it can stall while the model is still
easy to fool. The margin and DLR losses depend on logit differences only and keep their gradient;
a model that is much weaker under them than under cross-entropy is masking gradients
(Carlini & Wagner 2017, https://arxiv.org/abs/1608.04644; Croce & Hein 2020,
https://arxiv.org/abs/2003.01690). Each loss is summed over the batch and larger means closer to
a misclassification, so `PGD(model, ..., loss_fn=dlr_loss)` works unchanged.
"""

from __future__ import annotations

import torch


def _top_other(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The largest logit among the wrong classes, per example."""
    true_mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y[:, None], True)
    return logits.masked_fill(true_mask, float("-inf")).amax(1)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed `max_{i != y} z_i - z_y` (the Carlini-Wagner margin): positive once misclassified."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return (_top_other(logits, y) - z_y).sum()


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed Difference of Logits Ratio, `(max_{i != y} z_i - z_y) / (z_pi1 - z_pi3)`.

    Invariant to shifting and scaling the logits, so a huge logit scale cannot hide the gradient.
    Needs at least 3 classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top = logits.topk(3, dim=1).values  # (N, 3), sorted descending
    return ((_top_other(logits, y) - z_y) / (top[:, 0] - top[:, 2] + 1e-12)).sum()
