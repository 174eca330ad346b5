"""Table 4: GMVAE4P with one component removed at a time, on the same outer folds and seed as Table 1, from bulk
and in the scRNA mode (the network given the cells' modalities: from bulk it reads only the program's score, so what
each modality is worth shows there).

Each configuration changes exactly one thing relative to its reference, the full model or, for a change inside the
modality network, the network alone (:data:`ABLATIONS`); the difference in per-unit AUC from the reference comes with
a paired bootstrap interval over patients. The row whose GMVAE is trained with ``mse`` reads the states of the
second GMVAE that stage 02 trains (``gmvae.mse_for_ablation``) over stage 03's mixtures. Rows that stage 04 has
computed already are read from its tables (:func:`stage04_rows`), not refitted: the full model, and each learner
alone, which is the full model's own outer-fold learner (same rows, same seed).
"""

from __future__ import annotations

import dataclasses

import anndata as ad
import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: the same in a terminal, a notebook and a papermill log

from .. import keys
from ..layout import RunLayout
from .config import N_TOP_GENES, N_TOP_INTERACTIONS, ClassifierConfig
from .cv import Fold
from .evaluate import GMVAE4P_NAME, SCRNA_NAME, patients_of, start_cross_validation
from .metrics import auc_with_ci, binary_metrics, paired_auc_difference, unit_probabilities
from .model import MODALITIES
from .stack import single_stack
from .workers import FoldWorkers

FULL = "full"
NETWORK_ONLY = "modality network only"
_INSIDE_NETWORK = {"reference": NETWORK_ONLY}
ABLATIONS: dict[str, dict] = {
    FULL: {},
    "linear learner only": {"config": {"learners": ["linear"]}},
    "program learner only": {"config": {"learners": ["program"]}},
    NETWORK_ONLY: {"config": {"learners": ["network"]}},
    "no program learner (linear + network)": {"config": {"learners": ["linear", "network"]}},
    "network reads the most variable genes, not the program": {**_INSIDE_NETWORK, "config": {"bulk_input": "genes"}},
    "mean fusion (no certainty weighting)": {**_INSIDE_NETWORK, "config": {"fusion": "mean"}},
    "no contrastive term": {**_INSIDE_NETWORK, "config": {"contrastive_weight": 0.0}},
    "no communication": {**_INSIDE_NETWORK, "modalities": (keys.PROPORTIONS, keys.STATES)},
    "proportions only": {**_INSIDE_NETWORK, "modalities": (keys.PROPORTIONS,)},
    "states only": {**_INSIDE_NETWORK, "modalities": (keys.STATES,)},
    "communication only": {**_INSIDE_NETWORK, "modalities": (keys.COMMUNICATION,)},
    "no auxiliary modalities": {**_INSIDE_NETWORK, "modalities": ()},
    "states from highly variable gene means": {**_INSIDE_NETWORK, "sources": {keys.STATES: keys.STATES_EXPRESSION}},
    "GMVAE trained with mse": {**_INSIDE_NETWORK, "sources": {keys.STATES: keys.STATES_GMVAE_MSE}},
}
"""Configuration name → what it changes: ``config`` fields of :class:`ClassifierConfig`, the ``modalities``, or the
``sources`` a modality is read from; and the row it is compared with (``reference``, default :data:`FULL`). A change
inside the modality network is made to the network alone (:data:`NETWORK_ONLY`) and compared with it: inside the
stack, the other learners would hide what the network gained or lost. States from the raw latent means
(``obsm["states_latent"]``) are no row: the z-score is an affine map of the latent means per type and column, which
the network's per-column standardization undoes, so that row equalled its reference by construction."""


def learner_alone(name: str) -> str | None:
    """The learner that configuration ``name`` keeps when it changes nothing but keep that one learner, else
    ``None``."""
    change = ABLATIONS[name]
    learners = change.get("config", {}).get("learners", [])
    return learners[0] if set(change) == {"config"} and set(change["config"]) == {"learners"} and len(learners) == 1 \
        else None


def stage04_rows(predictions: pd.DataFrame, learners: pd.DataFrame, config: ClassifierConfig
                 ) -> dict[str, pd.DataFrame]:
    """The configurations whose out-of-fold predictions stage 04 has made, by name: :data:`FULL` (its GMVAE4P rows
    of ``tables/predictions.csv``, ``predictions``, with the scRNA mode's as ``probability_scrna``; as from bulk
    where it has none) and each single learner of ``config.learners`` (from ``tables/gmvae4p_learners.csv``,
    ``learners``: a single learner's probability is its logit taken as it is, clipped as the stack clips it; the
    network's scRNA mode from ``network_scrna``, the others' as from bulk). Empty when stage 04 did not run
    GMVAE4P."""
    if not (predictions["method"] == GMVAE4P_NAME).any():
        return {}
    rows = {FULL: _both_modes(predictions)}
    for name in ABLATIONS:
        learner = learner_alone(name)
        if learner in config.learners and learner in learners:
            # a learner that reads no modalities predicts in the scRNA mode as from bulk
            modes = {"probability": learner,
                     "probability_scrna": f"{learner}_scrna" if f"{learner}_scrna" in learners else learner}
            per_sample = learners[["fold", "unit", "label"]].assign(
                **{mode: _alone(learners[column]) for mode, column in modes.items()})
            rows[name] = pd.concat([unit_probabilities(part, columns=list(modes)).assign(fold=fold)
                                    for fold, part in per_sample.groupby("fold", sort=True)], ignore_index=True)
    return rows


def _both_modes(predictions: pd.DataFrame) -> pd.DataFrame:
    """GMVAE4P's per-unit rows of ``predictions`` (``method`` gmvae4p and, where there, gmvae4p_scrna) with the scRNA
    mode's probability as ``probability_scrna``: a model that reads no modalities has no scRNA rows and predicts
    there as from bulk."""
    bulk = predictions[predictions["method"] == GMVAE4P_NAME].drop(columns="method")
    scrna = predictions[predictions["method"] == SCRNA_NAME].set_index("unit")["probability"]
    return bulk.assign(probability_scrna=bulk["unit"].map(scrna) if len(scrna) else bulk["probability"])


def _alone(probability: pd.Series) -> np.ndarray:
    """A learner's probability as a stack of that learner alone gives it (its logit clipped)."""
    with np.errstate(divide="ignore"):
        p = probability.to_numpy(dtype=np.float64)
        return single_stack(("alone",)).probability((np.log(p) - np.log1p(-p))[:, None])


def read_stage04_rows(layout: RunLayout, config: ClassifierConfig) -> dict[str, pd.DataFrame]:
    """:func:`stage04_rows` from stage 04's tables in the run folder of ``layout``."""
    predictions = pd.read_csv(layout.require(layout.table("predictions"), "04_classify"), dtype={"unit": str})
    if not (predictions["method"] == GMVAE4P_NAME).any():
        return {}
    return stage04_rows(predictions, pd.read_csv(layout.table("gmvae4p_learners"), dtype={"unit": str}), config)


def reference(name: str) -> str:
    """The configuration that ablation ``name`` is compared with (itself for :data:`FULL`)."""
    return ABLATIONS[name].get("reference", FULL)


def available(samples: ad.AnnData) -> list[str]:
    """The configurations whose inputs ``samples`` hold: "GMVAE trained with mse" only where stage 02 trained that
    GMVAE (``gmvae.mse_for_ablation`` with another likelihood; with ``mse`` the row would be the full model)."""
    return [name for name, change in ABLATIONS.items()
            if all(source in samples.obsm for source in change.get("sources", {}).values())]


def configuration(name: str, config: ClassifierConfig) -> tuple[ClassifierConfig, tuple[str, ...], dict[str, str]]:
    """The classifier settings, modalities and modality sources of ablation ``name``."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {list(ABLATIONS)}.")
    change = ABLATIONS[name]
    base = ABLATIONS[reference(name)].get("config", {}) if name != FULL else {}
    return (dataclasses.replace(config, **{**base, **change.get("config", {})}),
            tuple(change.get("modalities", MODALITIES)), dict(change.get("sources", {})))


def ablate(samples: ad.AnnData, units: pd.DataFrame, folds: list[Fold], *, names: list[str] | None = None,
           config: ClassifierConfig = ClassifierConfig(), n_top_genes: int = N_TOP_GENES,
           n_top_interactions: int = N_TOP_INTERACTIONS, device: str | None = None, seed: int = 0, n_boot: int = 1000,
           workers: FoldWorkers | None = None, known: dict[str, pd.DataFrame] | None = None,
           progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold predictions of every configuration (``method`` = its name; ``probability`` from bulk,
    ``probability_scrna`` in the scRNA mode: the network given the cells' modalities, where the configuration has
    such a network, else the same as from bulk) and Table 4: per configuration what it changes (``config``,
    ``modalities`` or ``sources``), its ``reference`` row, the modalities it reads, the per-unit metrics from bulk and
    ``delta_auc`` (vs its reference) with its paired CI, and the AUC and Δ in the scRNA mode with their intervals
    (``auc_scrna``, ``delta_auc_scrna``…; NaN where a ``known`` row came without its scRNA mode). The references
    are added to ``names`` when missing. ``known``: out-of-fold predictions on these folds that exist already, by
    configuration (:func:`stage04_rows`: per unit ``fold``, ``unit``, ``label``, ``probability`` and, where known,
    ``probability_scrna``), read instead of refitted. Every other configuration's folds are submitted to ``workers``
    (:class:`~gmvae4p.classify.workers.FoldWorkers` of these ``samples``; default: this process) before any is
    collected."""
    names = list(ABLATIONS) if names is None else list(names)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; known: {list(ABLATIONS)}.")
    for needed in (NETWORK_ONLY, FULL):  # FULL ends up first
        if needed not in names and (needed == FULL or any(reference(n) == needed for n in names)):
            names.insert(0, needed)
    known = dict(known or {})
    for name, rows in known.items():
        if name not in ABLATIONS or len(rows) != len(units) or set(rows["unit"]) != set(units["unit"]):
            raise ValueError(f"known: the predictions of {name!r} must be a configuration's, one per unit of these "
                             "folds.")
    workers = workers or FoldWorkers(samples)
    pending, read = {}, {}
    for name in names:
        changed, modalities, sources = configuration(name, config)
        read[name] = modalities
        if name not in known:
            pending[name] = start_cross_validation(samples, units, folds, methods=["gmvae4p"], config=changed,
                                                   n_top_genes=n_top_genes, n_top_interactions=n_top_interactions,
                                                   modalities=modalities, sources=sources, device=device, seed=seed,
                                                   workers=workers)
    computed = {name: _both_modes(result.result(progress=False).predictions)
                for name, result in zip(pending, tqdm(pending.values(), desc="Ablations", disable=not progress))}
    computed.update({name: known[name] if "probability_scrna" in known[name]
                     else known[name].assign(probability_scrna=np.nan) for name in names if name in known})
    predictions = pd.concat([computed[name].assign(method=name) for name in names], ignore_index=True)
    predictions = predictions[["method", "fold", "unit", "label", "probability", "probability_scrna"]]
    by_unit = {mode: predictions.pivot(index="unit", columns="method", values=column)
               for mode, column in (("bulk", "probability"), ("scrna", "probability_scrna"))}
    y = predictions.drop_duplicates("unit").set_index("unit")["label"].loc[by_unit["bulk"].index].to_numpy()
    patients = patients_of(by_unit["bulk"].reset_index(), units)

    def delta(mode: str, name: str) -> tuple[float, float, float]:
        p, p_reference = by_unit[mode][name].to_numpy(), by_unit[mode][reference(name)].to_numpy()
        if np.isnan(p).any() or np.isnan(p_reference).any():
            return np.nan, np.nan, np.nan
        if name == FULL:
            return 0.0, np.nan, np.nan
        return paired_auc_difference(y, p, p_reference, patients=patients, n_boot=n_boot, seed=seed)

    def given_auc(name: str) -> tuple[float, float, float]:
        p = by_unit["scrna"][name].to_numpy()
        return (np.nan,) * 3 if np.isnan(p).any() else auc_with_ci(y, p, patients=patients, n_boot=n_boot, seed=seed)

    rows = []
    for name in names:
        bulk, scrna = delta("bulk", name), delta("scrna", name)
        rows.append({"configuration": name,
                     "changes": "+".join(k for k in ABLATIONS[name] if k != "reference") or "nothing",
                     "reference": reference(name), "modalities": " ".join(read[name]), "n_modalities": len(read[name]),
                     **binary_metrics(y, by_unit["bulk"][name].to_numpy(), patients=patients, n_boot=n_boot,
                                      seed=seed),
                     "delta_auc": bulk[0], "delta_auc_low": bulk[1], "delta_auc_high": bulk[2],
                     **dict(zip(["auc_scrna", "auc_scrna_low", "auc_scrna_high"], given_auc(name))),
                     "delta_auc_scrna": scrna[0], "delta_auc_scrna_low": scrna[1], "delta_auc_scrna_high": scrna[2]})
    return predictions, pd.DataFrame(rows)
