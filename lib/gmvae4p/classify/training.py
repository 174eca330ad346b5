"""One optimization loop for every torch classifier of this stage (GMVAE4P and the cell-level baselines).

AdamW over shuffled mini-batches of training rows; after each epoch the validation loss (rows of the fold's
validation patients, never its test patients) drives learning-rate halving and early stopping, and the best epoch's
weights are restored at the end. Without validation rows it runs ``max_epochs``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from .config import ClassifierConfig

GRAD_CLIP = 5.0


def fit(module: nn.Module, batch_loss: Callable[[torch.Tensor], torch.Tensor], n_train: int, *,
        validation_loss: Callable[[], torch.Tensor] | None, config: ClassifierConfig,
        seed: int = 0) -> list[dict[str, float]]:
    """Train ``module`` in place; ``batch_loss(rows)`` is the mean loss of training rows ``rows`` (a CPU index
    tensor), ``validation_loss()`` that of every validation row. Returns one record per epoch."""
    generator = torch.Generator().manual_seed(seed)
    # the fused kernel updates every parameter in one call: with a few dozen small tensors the per-tensor loop
    # costs as much as the forward pass
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                           patience=max(1, config.patience // 3))
    best, best_state, stale, history = math.inf, None, 0, []
    for epoch in range(1, config.max_epochs + 1):
        module.train()
        total = 0.0  # summed on the module's device: one host sync per epoch, not per step
        for rows in torch.randperm(n_train, generator=generator).split(config.batch_size):
            loss = batch_loss(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP, foreach=True)
            optimizer.step()
            total = total + loss.detach() * len(rows)
        record = {"epoch": epoch, "train_loss": float(total) / n_train, "lr": optimizer.param_groups[0]["lr"]}
        history.append(record)
        if validation_loss is None:
            continue
        module.eval()
        with torch.no_grad():
            record["validation_loss"] = current = float(validation_loss())
        scheduler.step(current)
        if current < best - 1e-4:
            best, best_state, stale = current, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history
