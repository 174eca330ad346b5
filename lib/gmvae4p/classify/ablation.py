"""Table 4: GMVAE4P with one component removed at a time, on the same outer folds and seed as Table 1.

Each configuration changes exactly one thing relative to its reference, the full model or, for a change inside the
modality network, the network alone (:data:`ABLATIONS`); the difference in per-unit AUC from the reference comes with
a paired bootstrap interval over patients. The row whose GMVAE is trained with ``mse`` reads states that
:func:`gmvae_states` makes from a second GMVAE over the same pseudobulk mixtures.
"""

from __future__ import annotations

import dataclasses

import anndata as ad
import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: the same in a terminal, a notebook and a papermill log

from .. import keys
from ..gmvae.model import GMVAE, split_settings
from ..modalities import states
from ..pseudobulk import plan_mixtures
from .config import N_TOP_GENES, N_TOP_INTERACTIONS, ClassifierConfig
from .cv import Fold
from .evaluate import patients_of, start_cross_validation
from .metrics import binary_metrics, paired_auc_difference
from .model import MODALITIES
from .workers import FoldWorkers

FULL = "full"
NETWORK_ONLY = "modality network only"
STATES_GMVAE_MSE = "states_gmvae_mse"
"""``samples.obsm`` key (in memory, stage 05) of the states from a GMVAE trained with ``mse``."""
_INSIDE_NETWORK = {"reference": NETWORK_ONLY}
ABLATIONS: dict[str, dict] = {
    FULL: {},
    "linear learner only": {"config": {"learners": ["linear"]}},
    "program learner only": {"config": {"learners": ["program"]}},
    NETWORK_ONLY: {"config": {"learners": ["network"]}},
    "no modality network (linear + program)": {"config": {"learners": ["linear", "program"]}},
    "network reads the most variable genes, not the program": {**_INSIDE_NETWORK, "config": {"bulk_input": "genes"}},
    "mean fusion (no certainty weighting)": {**_INSIDE_NETWORK, "config": {"fusion": "mean"}},
    "no contrastive term": {**_INSIDE_NETWORK, "config": {"contrastive_weight": 0.0}},
    "no communication": {**_INSIDE_NETWORK, "modalities": (keys.PROPORTIONS, keys.STATES)},
    "proportions only": {**_INSIDE_NETWORK, "modalities": (keys.PROPORTIONS,)},
    "states only": {**_INSIDE_NETWORK, "modalities": (keys.STATES,)},
    "communication only": {**_INSIDE_NETWORK, "modalities": (keys.COMMUNICATION,)},
    "no auxiliary modalities": {**_INSIDE_NETWORK, "modalities": ()},
    "states from highly variable gene means": {**_INSIDE_NETWORK, "sources": {keys.STATES: keys.STATES_EXPRESSION}},
    "GMVAE trained with mse": {**_INSIDE_NETWORK, "sources": {keys.STATES: STATES_GMVAE_MSE}},
}
"""Configuration name → what it changes: ``config`` fields of :class:`ClassifierConfig`, the ``modalities``, or the
``sources`` a modality is read from; and the row it is compared with (``reference``, default :data:`FULL`). A change
inside the modality network is made to the network alone (:data:`NETWORK_ONLY`) and compared with it: inside the
stack, the other learners would hide what the network gained or lost. States from the raw latent means
(``obsm["states_latent"]``) are no row: the z-score is an affine map of the latent means per type and column, which
the network's per-column standardization undoes, so that row equalled its reference by construction."""


def reference(name: str) -> str:
    """The configuration that ablation ``name`` is compared with (itself for :data:`FULL`)."""
    return ABLATIONS[name].get("reference", FULL)


def configuration(name: str, config: ClassifierConfig) -> tuple[ClassifierConfig, tuple[str, ...], dict[str, str]]:
    """The classifier settings, modalities and modality sources of ablation ``name``."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {list(ABLATIONS)}.")
    change = ABLATIONS[name]
    base = ABLATIONS[reference(name)].get("config", {}) if name != FULL else {}
    return (dataclasses.replace(config, **{**base, **change.get("config", {})}),
            tuple(change.get("modalities", MODALITIES)), dict(change.get("sources", {})))


def gmvae_states(cells: ad.AnnData, samples: ad.AnnData, gmvae_settings: dict, *, output_dir, seed: int = 0,
                 likelihood: str = "mse") -> np.ndarray:
    """States (as ``obsm["states"]``, samples × (types · latent dims)) from a GMVAE trained like stage 02's
    (``gmvae_settings``: its parameters section) but with ``likelihood``, over the same mixtures: the plan is drawn
    again from the samples' recorded settings and seed, which gives stage 03's mixtures. ``cells`` is stage 02's
    AnnData; its embedding keys are overwritten by the second GMVAE's."""
    settings = samples.uns[keys.UNS_PSEUDOBULK]["settings"]
    model_settings, fit_settings = split_settings({**gmvae_settings, "likelihood": likelihood})
    GMVAE(cells, **model_settings).fit(output_dir, seed=seed, **fit_settings)
    plan = plan_mixtures(cells, n_samples=int(settings["n_samples"]), n_cells=int(settings["n_cells"]),
                         proportions=str(settings["proportions"]),
                         sparse_prob=float(settings["sparse_prob"]), seed=int(settings["seed"]), progress=False)
    if list(plan.obs["sample_id"]) != list(samples.obs["sample_id"]):
        raise ValueError("the mixtures drawn again differ from stage 03's: were the cells or settings changed?")
    return states(cells, plan)[0]


def ablate(samples: ad.AnnData, units: pd.DataFrame, folds: list[Fold], *, names: list[str] | None = None,
           config: ClassifierConfig = ClassifierConfig(), n_top_genes: int = N_TOP_GENES,
           n_top_interactions: int = N_TOP_INTERACTIONS, device: str | None = None, seed: int = 0, n_boot: int = 1000,
           workers: FoldWorkers | None = None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold predictions of every configuration (``method`` = its name) and Table 4: per configuration what it
    changes (``config``, ``modalities`` or ``sources``), its ``reference`` row, the modalities it reads, the per-unit
    metrics and ``delta_auc`` (vs its reference) with its paired CI. The references are added to ``names`` when
    missing. Every configuration's folds are submitted to ``workers`` (:class:`~gmvae4p.classify.workers.FoldWorkers`
    of these ``samples``; default: this process) before any is collected."""
    names = list(ABLATIONS) if names is None else list(names)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; known: {list(ABLATIONS)}.")
    for needed in (NETWORK_ONLY, FULL):  # FULL ends up first
        if needed not in names and (needed == FULL or any(reference(n) == needed for n in names)):
            names.insert(0, needed)
    workers = workers or FoldWorkers(samples)
    pending, read = [], {}
    for name in names:
        changed, modalities, sources = configuration(name, config)
        read[name] = modalities
        pending.append(start_cross_validation(samples, units, folds, methods=["gmvae4p"], config=changed,
                                              n_top_genes=n_top_genes, n_top_interactions=n_top_interactions,
                                              modalities=modalities, sources=sources, device=device, seed=seed,
                                              workers=workers))
    predictions = [result.result(progress=False).predictions.query("method == 'gmvae4p'").assign(method=name)
                   for name, result in zip(tqdm(names, desc="Ablations", disable=not progress), pending)]
    predictions = pd.concat(predictions, ignore_index=True)
    by_unit = predictions.pivot(index="unit", columns="method", values="probability")
    y = predictions.drop_duplicates("unit").set_index("unit")["label"].loc[by_unit.index].to_numpy()
    patients = patients_of(by_unit.reset_index(), units)
    rows = []
    for name in names:
        delta = paired_auc_difference(y, by_unit[name].to_numpy(), by_unit[reference(name)].to_numpy(),
                                      patients=patients, n_boot=n_boot, seed=seed) if name != FULL \
            else (0.0, np.nan, np.nan)
        rows.append({"configuration": name,
                     "changes": "+".join(k for k in ABLATIONS[name] if k != "reference") or "nothing",
                     "reference": reference(name), "modalities": " ".join(read[name]), "n_modalities": len(read[name]),
                     **binary_metrics(y, by_unit[name].to_numpy(), patients=patients, n_boot=n_boot, seed=seed),
                     "delta_auc": delta[0], "delta_auc_low": delta[1], "delta_auc_high": delta[2]})
    return predictions, pd.DataFrame(rows)
