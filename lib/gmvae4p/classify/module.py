"""GMVAE4P as a pure torch module: bulk expression in, phenotype out, with the single-cell modalities as auxiliary
targets during training.

bulk log-CPM → bulk encoder → for each modality (proportions, states, communication) a head predicting its mean and
log-variance → that modality's encoder → fusion weighted by each modality's predicted certainty (a softmax over
−mean log-variance, divided by a learned temperature) → classifier. Training loss: cross-entropy + Gaussian NLL of
the true modalities under the predicted ones + a contrastive term that aligns the encoding of each predicted modality
with the encoding of the true one of the same sample (InfoNCE over the batch); each term has its weight. With
``use_true=True`` the modality encoders read the true modalities instead (scRNA mode); training gives that path its
own cross-entropy, so both deployments are trained models. Training runs both paths from one bulk encoding
(:meth:`GMVAE4PModule.forward_both`) and the contrastive term reads the encodings they made. Missing entries of a
true modality (NaN: a cell type not drawn) are left out of the NLL and read as 0 (the standardized mean) by the
encoders.

The cell-level baselines' networks are here too: :class:`PrototypeModule` (ProtoCell4P-style) and
:class:`PerTypeModule` (singleDeep-style).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..gmvae.module import mlp


FUSIONS = ("certainty", "mean")


class GMVAE4PModule(nn.Module):
    """The multi-modal classifier.

    Parameters
    ----------
    n_genes
        Width of the bulk input (genes selected on the training units).
    modality_dims
        Feature count of each auxiliary modality, by name (its order is the order of the fusion weights). Empty:
        no auxiliary modalities, the bulk encoding goes straight to the classifier (an ablation).
    fusion
        ``certainty`` (softmax of predicted certainty over a learned temperature) or ``mean`` (equal weights: an
        ablation).
    n_classes, hidden_dim, embed_dim, dropout
        Architecture.
    """

    def __init__(self, n_genes: int, modality_dims: dict[str, int], *, fusion: str = "certainty", n_classes: int = 2,
                 hidden_dim: int = 256, embed_dim: int = 64, dropout: float = 0.2):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {list(FUSIONS)}, not {fusion!r}.")
        self.modalities, self.fusion = list(modality_dims), fusion
        self.bulk_encoder = mlp([n_genes, hidden_dim, hidden_dim], dropout, nn.GELU)
        self.bulk_projection = None if modality_dims else nn.Linear(hidden_dim, embed_dim)
        self.heads = nn.ModuleDict({m: nn.Linear(hidden_dim, 2 * d) for m, d in modality_dims.items()})
        self.encoders = nn.ModuleDict({m: mlp([d, embed_dim], dropout, nn.GELU) for m, d in modality_dims.items()})
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, bulk: torch.Tensor, modalities: dict[str, torch.Tensor] | None = None, *,
                use_true: bool = False) -> dict[str, torch.Tensor]:
        """``logits``, ``fusion_weights`` (samples × modalities), ``fused`` (the representation classified), and per
        modality ``mean/<m>``, ``log_var/<m>``, ``embedding/<m>`` (of what the encoder read)."""
        if use_true and (modalities is None or not self.modalities):
            raise ValueError("use_true=True needs the true modalities (and a model with auxiliary modalities).")
        hidden = self.bulk_encoder(bulk)
        if self.bulk_projection is not None:
            fused = self.bulk_projection(hidden)
            return {"logits": self.classifier(fused), "fusion_weights": hidden.new_zeros(len(bulk), 0),
                    "fused": fused}
        return self._fuse(self._heads(hidden), modalities if use_true else None)

    def forward_both(self, bulk: torch.Tensor, modalities: dict[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """What training reads: :meth:`forward`'s outputs from bulk alone and with the true ``modalities``
        (``None`` without auxiliary modalities), both from one bulk encoding and one pass of the heads."""
        if not self.modalities:
            return self(bulk), None
        heads = self._heads(self.bulk_encoder(bulk))
        return self._fuse(heads, None), self._fuse(heads, modalities)

    def _heads(self, hidden: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each modality's predicted mean and (clamped) log-variance."""
        heads = {}
        for m in self.modalities:
            mean, log_var = self.heads[m](hidden).chunk(2, dim=-1)
            heads[m] = mean, log_var.clamp(-8.0, 8.0)
        return heads

    def _fuse(self, heads: dict[str, tuple[torch.Tensor, torch.Tensor]],
              true: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """The encoders read the predicted means, or the ``true`` modalities; the certainty weights always come
        from the predicted log-variances."""
        out, embeddings, certainty = {}, [], []
        for m in self.modalities:
            mean, log_var = heads[m]
            embedding = self.encoders[m](mean if true is None else torch.nan_to_num(true[m], nan=0.0))
            out[f"mean/{m}"], out[f"log_var/{m}"], out[f"embedding/{m}"] = mean, log_var, embedding
            embeddings.append(embedding)
            certainty.append(-log_var.mean(-1))
        if self.fusion == "certainty":
            weights = torch.softmax(torch.stack(certainty, -1) / self.log_temperature.exp(), dim=-1)
        else:
            weights = torch.full_like(torch.stack(certainty, -1), 1 / len(self.modalities))
        fused = (weights[..., None] * torch.stack(embeddings, 1)).sum(1)
        out.update(logits=self.classifier(fused), fusion_weights=weights, fused=fused)
        return out

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor, modalities: dict[str, torch.Tensor], *,
             true_out: dict[str, torch.Tensor] | None = None, nll_weight: float = 1.0,
             contrastive_weight: float = 0.1, temperature: float = 0.1,
             class_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``loss`` = cross-entropy (weighted per class by ``class_weight``) + ``nll_weight`` · mean Gaussian NLL per
        modality + ``contrastive_weight`` · InfoNCE between predicted-modality and true-modality encodings (+ the
        cross-entropy of the scRNA path when its output ``true_out`` is given); each term returned too."""
        ce = F.cross_entropy(out["logits"], labels, weight=class_weight)
        ce_true = F.cross_entropy(true_out["logits"], labels, weight=class_weight) if true_out is not None \
            else torch.zeros_like(ce)
        nll, contrastive = out["logits"].new_zeros(()), out["logits"].new_zeros(())
        for m in self.modalities:
            target = modalities[m]
            known = ~torch.isnan(target)
            mean, log_var = out[f"mean/{m}"], out[f"log_var/{m}"]
            per_entry = 0.5 * (log_var + (torch.nan_to_num(target) - mean) ** 2 / log_var.exp())
            nll = nll + (per_entry * known).sum() / known.sum().clamp_min(1)
            if contrastive_weight:  # the encodings the forward passes made, where they made them
                predicted = F.normalize(out[f"embedding/{m}"], dim=-1)
                true = F.normalize(true_out[f"embedding/{m}"] if true_out is not None
                                   else self.encoders[m](torch.nan_to_num(target)), dim=-1)
                similarity = predicted @ true.T / temperature
                contrastive = contrastive + F.cross_entropy(similarity, torch.arange(len(similarity),
                                                                                    device=similarity.device))
        n = max(len(self.modalities), 1)
        total = ce + ce_true + nll_weight * nll / n + contrastive_weight * contrastive / n
        return {"loss": total, "ce": ce, "ce_true": ce_true, "nll": nll / n, "contrastive": contrastive / n}


class PrototypeModule(nn.Module):
    """ProtoCell4P-style cell-level classifier: each cell is encoded and compared with learned prototypes
    (similarity exp(−‖h − p‖² / width)); a per-cell importance score, softmaxed over the unit's cells, pools the
    similarities into one vector per unit, which a linear layer classifies.

    ``forward(cells)`` takes units × cells × features and returns the logits and the cells' importances.
    """

    def __init__(self, n_features: int, *, n_prototypes: int = 16, hidden_dim: int = 64, n_classes: int = 2,
                 dropout: float = 0.2):
        super().__init__()
        self.encoder = mlp([n_features, hidden_dim, hidden_dim], dropout, nn.GELU)
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, hidden_dim))
        self.importance = nn.Linear(hidden_dim, 1)
        self.classifier = nn.Linear(n_prototypes, n_classes)

    def forward(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(cells)
        # ‖h − p‖² expanded into matrix products: no cells × prototypes × width intermediate
        distance = ((hidden ** 2).sum(-1, keepdim=True) - 2 * hidden @ self.prototypes.T
                    + (self.prototypes ** 2).sum(-1)) / hidden.shape[-1]
        importance = torch.softmax(self.importance(hidden).squeeze(-1), dim=1)
        pooled = (importance[..., None] * torch.exp(-distance)).sum(1)
        return self.classifier(pooled), importance


class PerTypeModule(nn.Module):
    """singleDeep-style classifier: one small network per cell type reads that type's pseudobulk expression of a
    unit; the unit's call is the mean of the per-type probabilities over the types it has (a vote). The networks
    share nothing: each is trained and early-stopped on its own.

    ``forward(x)`` takes units × types × genes and returns per-type logits (units × types × classes);
    :meth:`vote` combines them over the types present.
    """

    def __init__(self, n_types: int, n_genes: int, *, hidden_dim: int = 32, n_classes: int = 2,
                 dropout: float = 0.2):
        super().__init__()
        self.networks = nn.ModuleList(nn.Sequential(mlp([n_genes, hidden_dim], dropout, nn.GELU),
                                                    nn.Linear(hidden_dim, n_classes)) for _ in range(n_types))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x[:, t]) for t, net in enumerate(self.networks)], dim=1)

    @staticmethod
    def vote(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean class probabilities over the types each unit has (units × classes)."""
        weights = present.float()[..., None]
        return (torch.softmax(logits, -1) * weights).sum(1) / weights.sum(1).clamp_min(1)
