"""A Gaussian mixture with diagonal covariances fitted by EM, in torch (the device image has no scikit-learn).

The unsupervised GMVAE places its prior's components with it (:func:`gmvae4p.gmvae.train.fit_prior`): started from
randomly placed components, q(y|x) can send every cell to one of them and never recover, so after a few epochs the components are fitted to where the cells' latent means actually lie.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class GaussianMixture(NamedTuple):
    means: torch.Tensor  # (K, d)
    variances: torch.Tensor  # (K, d)
    weights: torch.Tensor  # (K,)
    log_likelihood: float  # mean per point


def fit_gaussian_mixture(points: torch.Tensor, n_components: int, *, seed: int = 0, n_init: int = 3,
                         max_iter: int = 200, tol: float = 1e-5, min_variance: float = 1e-4) -> GaussianMixture:
    """EM from ``n_init`` k-means++ starts; the fit with the highest likelihood wins.

    ``min_variance`` is added to every variance, so that a component on a few identical points stays finite.
    """
    if len(points) < n_components:
        raise ValueError(f"fitting {n_components} components needs at least as many points, not {len(points)}.")
    points = points.double()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    best = None
    for _ in range(n_init):
        fit = _em(points, _kmeans_plus_plus(points, n_components, generator), max_iter, tol, min_variance)
        if best is None or fit.log_likelihood > best.log_likelihood:
            best = fit
    return GaussianMixture(best.means.float(), best.variances.float(), best.weights.float(), best.log_likelihood)


def log_responsibilities(points: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                         weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(k | x) per point and component, log p(x) per point)``."""
    precision = 1.0 / variances
    # Σ_d (x − μ)² / σ² expanded: (points × K) products, never a (points × K × d) array
    squared = points ** 2 @ precision.T - 2 * points @ (means * precision).T + (means ** 2 * precision).sum(-1)[None]
    joint = weights.log()[None] - 0.5 * (squared + variances.log().sum(-1)[None]
                                         + points.shape[1] * math.log(2 * math.pi))
    log_evidence = torch.logsumexp(joint, -1)
    return joint - log_evidence[:, None], log_evidence


def _kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k starting means, each drawn with probability proportional to its squared distance from those chosen."""
    first = torch.randint(len(points), (1,), generator=generator).item()
    centers = points[first:first + 1]
    nearest = ((points - centers) ** 2).sum(-1)
    for _ in range(k - 1):
        chosen = torch.multinomial(nearest.cpu().clamp_min(0) + 1e-30, 1, generator=generator).item()
        centers = torch.cat([centers, points[chosen:chosen + 1]])
        nearest = torch.minimum(nearest, ((points - points[chosen]) ** 2).sum(-1))
    return centers


def _em(points, means, max_iter, tol, min_variance) -> GaussianMixture:
    k = len(means)
    variances = points.var(0, unbiased=False).expand(k, -1) + min_variance
    weights = torch.full((k,), 1.0 / k, dtype=points.dtype, device=points.device)
    previous = -math.inf
    for _ in range(max_iter):
        log_resp, log_evidence = log_responsibilities(points, means, variances, weights)
        resp = log_resp.exp()
        mass = resp.sum(0) + 1e-10  # a component that lost every point keeps finite parameters
        means = resp.T @ points / mass[:, None]
        variances = resp.T @ points ** 2 / mass[:, None] - means ** 2 + min_variance
        variances = variances.clamp_min(min_variance)
        weights = mass / mass.sum()
        current = log_evidence.mean().item()
        if current - previous < tol:
            break
        previous = current
    return GaussianMixture(means, variances, weights, current)
