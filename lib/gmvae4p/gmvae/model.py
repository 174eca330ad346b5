"""The GMVAE for AnnData users: fit, embed, save, load.

:meth:`GMVAE.fit` writes the training-set file and settings into a folder and trains, in this process or under
torchrun (``n_processes``), then writes into the AnnData (keys in :mod:`gmvae4p.keys`):
``obsm["X_gmvae"]``, ``obsm["X_gmvae_zscore"]``, ``obs["gmvae_cell_type"]``, ``obs["gmvae_cell_type_uncertainty"]``,
``obsm["gmvae_proba"]``, ``obs["gmvae_held_out"]`` and ``uns["gmvae"]``. :func:`transfer_labels` names the cell
types of another AnnData with a saved GMVAE, as CellTypist and scANVI users annotate a query.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.metrics import balanced_accuracy_score

from .. import keys
from ..data import atomic_path, check_counts, obs_column
from . import train as training
from .batches import CSRBatches
from .caller import CellTypeCaller, fit_caller
from .config import ModuleConfig, TrainConfig
from .launch import launch
from .module import UNLABELED, GMVAEModule
from .trainset import write_trainset

TRAINSET = "trainset.h5"
MODEL_SETTINGS = ("use_highly_variable", "supervised", *(f.name for f in dataclasses.fields(ModuleConfig)))


STAGE_SETTINGS = ("mse_for_ablation",)
"""Fields of the ``gmvae`` parameters section that tell stage 02 what to train, not how to train one GMVAE."""


def split_settings(settings: dict) -> tuple[dict, dict]:
    """A ``gmvae`` parameters section as ``(GMVAE(adata, ...) arguments, GMVAE.fit(...) arguments)``."""
    return ({k: v for k, v in settings.items() if k in MODEL_SETTINGS},
            {k: v for k, v in settings.items() if k not in MODEL_SETTINGS and k not in STAGE_SETTINGS})


def fit_zscore(adata: ad.AnnData, settings: dict, output_dir: str | os.PathLike, *,
               trainset: str | os.PathLike | None = None, seed: int = 0, busy_cores: int = 0) -> np.ndarray:
    """The per-component z-score (cells × latent dims) of another GMVAE trained on ``adata`` with ``settings`` (a
    ``gmvae`` parameters section) and the same held-out patients, without touching ``adata``'s own GMVAE keys: stage
    02 trains the ablation's ``mse`` GMVAE this way, its model under ``output_dir``, reading the first fit's
    ``trainset``; ``trainset`` and ``busy_cores`` as :meth:`GMVAE.fit` takes them."""
    shared = ad.AnnData(obs=adata.obs.copy(), var=adata.var.copy(), uns={keys.UNS: adata.uns[keys.UNS]},
                        layers={k: v for k, v in adata.layers.items() if k == keys.COUNTS})  # shared, not copied
    model_settings, fit_settings = split_settings(settings)
    GMVAE(shared, **model_settings).fit(output_dir, seed=seed, trainset=trainset, busy_cores=busy_cores,
                                        **fit_settings)
    return shared.obsm[keys.X_GMVAE_ZSCORE]


class GMVAE:
    """Gaussian-mixture VAE with one component per cell type of ``adata``.

    Parameters
    ----------
    adata
        Preprocessed cohort (:func:`gmvae4p.preprocess.qc_normalize_hvg`): raw counts in ``layers["counts"]``,
        column roles in ``uns["gmvae4p"]``.
    use_highly_variable
        Model the genes flagged in ``var["highly_variable"]`` (all genes when False).
    supervised
        Train q(y|x) on the annotated cell types; False fits K = number of cell types components without labels.
    **module_settings
        :class:`gmvae4p.gmvae.config.ModuleConfig` fields (``likelihood``, ``latent_dim``, ``hidden_dims`` …).
    """

    def __init__(self, adata: ad.AnnData, *, use_highly_variable: bool = True, supervised: bool = True,
                 **module_settings):
        _check_preprocessed(adata, counts=False)  # the counts are checked where they are read (fit, embed)
        self.adata = adata
        self.module_config = ModuleConfig(**module_settings)
        self.supervised = supervised
        if use_highly_variable and keys.HIGHLY_VARIABLE in adata.var:
            self.genes = adata.var_names[adata.var[keys.HIGHLY_VARIABLE].to_numpy(bool)].tolist()
        else:
            self.genes = adata.var_names.tolist()
        types = adata.obs[obs_column(adata, "cell_type")].astype("category")
        self.cell_types = types.cat.remove_unused_categories().cat.categories.tolist()
        self.component_names = self.cell_types if supervised else [f"component {i}" for i in
                                                                   range(len(self.cell_types))]
        self.train_config = TrainConfig(supervised=supervised)
        self.module: GMVAEModule | None = None
        self.history: list[dict] = []
        self.held_out_patients: list[str] = []
        self.caller: CellTypeCaller | None = None
        """The cell-type call (:mod:`gmvae4p.gmvae.caller`), fitted after training (supervised only); without it
        the call is q(y|x)'s."""

    def fit(self, output_dir: str | os.PathLike, *, validation_fraction: float = 0.2,
            held_out_patients: list[str] | None = None, n_processes: int | None = None, device: str | None = None,
            resume: bool = False, seed: int = 0, log: Callable[[str], None] | None = print,
            trainset: str | os.PathLike | None = None, busy_cores: int = 0, release_counts: bool = False,
            **train_settings) -> GMVAE:
        """Train, then write the embedding into ``adata``.

        ``held_out_patients`` (or a ``validation_fraction`` of patients drawn with ``seed``) are left out of
        training and give ``val_acc``. ``n_processes=None`` trains in this process; an integer starts torchrun with
        that many ranks. ``trainset``: a training-set file this fit would write identically (another fit's on the same
        cells, genes, held-out patients and seed), read instead of written again. ``busy_cores``: cores that other
        work keeps busy meanwhile (stage 02's UMAP compile), left out of the ranks' threads. ``release_counts``:
        drop ``adata.layers["counts"]`` once the training set holds them, so that this process holds no copy while
        the training process reads its own (stage 02 writes them back with :func:`gmvae4p.data.write_h5ad`'s
        ``x_from``; :meth:`embed` needs them back). ``train_settings``: :class:`gmvae4p.gmvae.config.TrainConfig`
        fields.
        """
        if trainset is None:
            _check_preprocessed(self.adata)
        config = self.train_config = TrainConfig(supervised=self.supervised, **train_settings)
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        patients = self.adata.obs[obs_column(self.adata, "patient")].astype(str).to_numpy()
        self.held_out_patients = _held_out(patients, held_out_patients, validation_fraction, seed)
        validation = np.isin(patients, self.held_out_patients)
        if validation.all():
            raise ValueError("held_out_patients / validation_fraction leave no patient to train on.")
        log = log or (lambda line: None)
        start = time.perf_counter()
        if trainset is None:
            trainset = output_dir / TRAINSET
            components = self._components(self.adata) if self.supervised else np.full(self.adata.n_obs, UNLABELED)
            # the layer itself and the genes' columns: the training set takes them a block of rows at a time
            write_trainset(trainset, self.adata.layers[keys.COUNTS], components, component_names=self.component_names,
                           genes=self.genes, validation=validation, seed=seed,
                           columns=self.adata.var_names.get_indexer(self.genes))
            log(f"Training set written: {trainset} ({time.perf_counter() - start:.1f} s)")
        if release_counts:
            self.adata.layers.pop(keys.COUNTS, None)
        training.write_settings(output_dir, self.module_config, config, seed=seed)
        start = time.perf_counter()
        if n_processes is None:
            training.run(trainset, output_dir, resume=resume, device=device, log=log)
        else:
            launch(trainset, output_dir, n_processes=n_processes, resume=resume, device=device, busy_cores=busy_cores,
                   log=log)
        log(f"Training and embedding took {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        self._load_module(output_dir / training.MODEL)
        with h5py.File(output_dir / training.EMBEDDING, "r") as f:
            z_mean, proba, zscore = f["z_mean"][:], f["proba"][:], f["zscore"][:]
        held_out_probabilities = None
        if self.supervised:
            self.caller, held_out_probabilities = fit_caller(z_mean, self._components(self.adata), validation,
                                                             len(self.component_names), seed=seed)
            _store_caller(output_dir / training.MODEL, self.caller)
        self._write_keys(self.adata, z_mean, proba, zscore, held_out_probabilities)
        log("Embedding read" + (" and cell-type caller fitted" if self.supervised else "")
            + f" ({time.perf_counter() - start:.1f} s)")
        return self

    def embed(self, adata: ad.AnnData | None = None, *, batch_size: int = 2048, device: str | None = None) -> None:
        """Write the embedding keys into ``adata`` (default: the training AnnData) with the trained module."""
        if self.module is None:
            raise RuntimeError("this GMVAE is not trained: call fit first, or GMVAE.load a saved one.")
        adata = self.adata if adata is None else adata
        _check_preprocessed(adata)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module.to(device)
        known = self._components(adata) if self.supervised else np.full(adata.n_obs, UNLABELED)
        result = training.embed(self.module, CSRBatches(self._counts(adata), device=device),
                                torch.from_numpy(known).to(device), batch_size)
        self._write_keys(adata, *(result[k].cpu().numpy() for k in ("z_mean", "proba", "zscore")))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trained module and its settings to ``path`` (a ``.pt`` file ``torch.load(weights_only=True)``
        reads)."""
        if self.module is None:
            raise RuntimeError("this GMVAE is not trained: call fit first.")
        training.save_state(path, self.module, self.module_config, self.train_config, genes=self.genes,
                            component_names=self.component_names, history=self.history, complete=True,
                            caller=self.caller.state() if self.caller else None)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, adata: ad.AnnData) -> GMVAE:
        """A trained GMVAE from :meth:`save` or a training folder's ``model.pt``, for embedding ``adata``."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        supervised = state["train_config"]["supervised"]
        _require_genes(state["genes"], adata, "adata")
        model = cls(adata, supervised=supervised, **state["module_config"])
        model.genes, model.component_names = state["genes"], state["component_names"]
        model.train_config = TrainConfig(**state["train_config"])
        model.caller = CellTypeCaller.from_state(state[training.CALLER]) if training.CALLER in state else None
        model._load_module(path, state)
        return model

    def _load_module(self, path, state=None) -> None:
        self.module, self.history = _trained_module(path, state)

    def _counts(self, adata: ad.AnnData) -> sp.csr_matrix:
        counts = adata[:, self.genes].layers[keys.COUNTS]
        return sp.csr_matrix(counts, dtype=np.float32)

    def _components(self, adata: ad.AnnData) -> np.ndarray:
        """Index of each cell's annotated type among the components, −1 for a type the model does not know."""
        types = adata.obs[obs_column(adata, "cell_type")].astype(str)
        return pd.Categorical(types, categories=self.component_names).codes.astype(np.int64)  # −1: unknown

    def _write_keys(self, adata: ad.AnnData, z_mean, proba, zscore, held_out_probabilities=None) -> None:
        """``held_out_probabilities``: the call's probabilities of the held-out patients' cells from the regression
        fitted without them (:func:`~gmvae4p.gmvae.caller.fit_caller`), so that their accuracy is out of sample."""
        adata.obsm[keys.X_GMVAE] = np.asarray(z_mean, dtype=np.float32)
        adata.obsm[keys.X_GMVAE_ZSCORE] = np.asarray(zscore, dtype=np.float32)
        probabilities = self.caller.probabilities(z_mean) if self.caller else np.asarray(proba, dtype=np.float32)
        patients = adata.obs[obs_column(adata, "patient")].astype(str)
        if held_out_probabilities is not None:
            probabilities[patients.isin(self.held_out_patients).to_numpy()] = held_out_probabilities
        adata.obsm[keys.GMVAE_PROBA] = probabilities
        adata.obs[keys.GMVAE_CELL_TYPE] = pd.Categorical.from_codes(probabilities.argmax(1),
                                                                    categories=self.component_names)
        adata.obs[keys.GMVAE_CELL_TYPE_UNCERTAINTY] = 1.0 - probabilities.max(1)
        adata.obs[keys.GMVAE_HELD_OUT] = patients.isin(self.held_out_patients).to_numpy()
        adata.uns[keys.UNS_GMVAE] = {
            "settings": {**_plain(dataclasses.asdict(self.module_config)), "supervised": self.supervised},
            "components": list(self.component_names),
            "genes": list(self.genes),
            "held_out_patients": list(self.held_out_patients),
            "history": {k: [h[k] for h in self.history] for k in (self.history[0] if self.history else {})},
            "metrics": self.held_out_metrics(adata),
            "calibration": self.caller.calibration if self.caller else 1.0,
        }

    def held_out_metrics(self, adata: ad.AnnData) -> dict:
        """Accuracy and balanced accuracy of the cell-type call on held-out patients' annotated cells."""
        if not (self.supervised and keys.GMVAE_CELL_TYPE in adata.obs):
            return {}
        held = adata.obs[keys.GMVAE_HELD_OUT].to_numpy(bool) if keys.GMVAE_HELD_OUT in adata.obs else \
            np.zeros(adata.n_obs, bool)
        truth = self._components(adata)
        cells = held & (truth >= 0)
        if not cells.any():
            return {}
        called = adata.obs[keys.GMVAE_CELL_TYPE].cat.codes.to_numpy()[cells]
        return {"held_out_cells": int(cells.sum()),
                "held_out_accuracy": float((called == truth[cells]).mean()),
                "held_out_balanced_accuracy": float(balanced_accuracy_score(truth[cells], called))}


MAX_UNCERTAINTY = 0.5
"""Label transfer's default: a cell whose calibrated call gives no type at least half the probability is called
:data:`~gmvae4p.keys.UNKNOWN` (CellTypist's default probability threshold is the same 0.5)."""


def transfer_labels(model: str | os.PathLike, query: ad.AnnData, *, max_uncertainty: float = MAX_UNCERTAINTY,
                    batch_size: int = 2048, device: str | None = None) -> ad.AnnData:
    """Name the cell types of ``query`` with a saved supervised GMVAE (:meth:`GMVAE.save`, a training folder's
    ``model.pt`` or a GMVAE4P bundle's ``gmvae.pt``), reading no annotation of the query.

    ``query`` needs raw counts in ``layers["counts"]`` for every gene of the model. Writes ``obsm["X_gmvae"]``,
    ``obsm["X_gmvae_zscore"]`` (for the mixture component q(y|x) assigns), ``obsm["gmvae_proba"]``, ``obs["gmvae_cell_type"]`` (the type
    of largest calibrated probability in ``obsm["gmvae_proba"]`` (:mod:`gmvae4p.gmvae.caller`), ``"unknown"`` where
    ``obs["gmvae_cell_type_uncertainty"]``, 1 − that probability, exceeds ``max_uncertainty``) and returns ``query``.
    """
    if not 0 <= max_uncertainty <= 1:
        raise ValueError(f"max_uncertainty must be in [0, 1], not {max_uncertainty!r}.")
    state = torch.load(model, map_location="cpu", weights_only=True)
    if training.CALLER not in state:
        raise ValueError(f"{model} has no cell-type call: it was trained without cell types (supervised: false), "
                         "so its components have no names to transfer.")
    if keys.COUNTS not in query.layers:
        raise KeyError(f"query.layers[{keys.COUNTS!r}] is missing: label transfer reads raw counts.")
    check_counts(query.layers[keys.COUNTS], where='query.layers["counts"]')
    _require_genes(state["genes"], query, "the query")
    module, _ = _trained_module(model, state)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    counts = sp.csr_matrix(query[:, state["genes"]].layers[keys.COUNTS], dtype=np.float32)
    unannotated = torch.full((query.n_obs,), UNLABELED, device=device)
    result = training.embed(module.to(device), CSRBatches(counts, device=device), unannotated, batch_size)
    z_mean = result["z_mean"].cpu().numpy()
    probabilities = CellTypeCaller.from_state(state[training.CALLER]).probabilities(z_mean)
    doubt = 1.0 - probabilities.max(1)
    names = list(state["component_names"])
    called = np.where(doubt > max_uncertainty, len(names), probabilities.argmax(1))
    query.obsm[keys.X_GMVAE] = z_mean
    query.obsm[keys.X_GMVAE_ZSCORE] = result["zscore"].cpu().numpy()
    query.obsm[keys.GMVAE_PROBA] = probabilities
    query.obs[keys.GMVAE_CELL_TYPE] = pd.Categorical.from_codes(called, categories=[*names, keys.UNKNOWN])
    query.obs[keys.GMVAE_CELL_TYPE_UNCERTAINTY] = doubt
    return query


def _require_genes(genes: list[str], adata: ad.AnnData, name: str) -> None:
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(f"{name} lacks {len(missing)} of the model's {len(genes)} genes (first: {missing[:3]}); "
                         "embed data measured on the same genes.")


def _store_caller(path: Path, caller: CellTypeCaller) -> None:
    """Add the cell-type call to the ``.pt`` file the training entry wrote, atomically."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state[training.CALLER] = caller.state()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _trained_module(path, state=None) -> tuple[GMVAEModule, list[dict]]:
    """The module of a completed training run's state (read from ``path`` unless given), in eval mode, and its
    history."""
    state = state or torch.load(path, map_location="cpu", weights_only=True)
    if not state.get("complete"):
        raise RuntimeError(f"{path} is not a completed training run.")
    module = training.build_module(len(state["genes"]), len(state["component_names"]),
                                   ModuleConfig(**state["module_config"]), state["train_config"].get("backend", "fast"))
    module.load_weights(state["module"], str(path))
    return module.eval(), state["history"]


def summary(adata: ad.AnnData) -> pd.Series:
    """What the GMVAE was fitted to (the counts a re-run must reproduce; accuracies are in ``uns["gmvae"]``)."""
    record = adata.uns[keys.UNS_GMVAE]
    return pd.Series({"cells": adata.n_obs, "genes modelled": len(record["genes"]),
                      "components": len(record["components"]), "likelihood": record["settings"]["likelihood"],
                      "held-out patients": len(record["held_out_patients"]),
                      "epochs": len(record["history"].get("epoch", []))}, name="GMVAE")


def _check_preprocessed(adata: ad.AnnData, *, counts: bool = True) -> None:
    if counts and keys.COUNTS not in adata.layers:
        raise KeyError(f"adata.layers[{keys.COUNTS!r}] is missing: run gmvae4p.preprocess.qc_normalize_hvg "
                       "(stage 01) first.")
    obs_column(adata, "patient")  # raises when the column roles were never recorded


def _held_out(patients: np.ndarray, chosen: list[str] | None, fraction: float, seed: int) -> list[str]:
    unique = np.unique(patients)
    if chosen is not None:
        unknown = sorted(set(chosen) - set(unique))
        if unknown:
            raise ValueError(f"held_out_patients {unknown} are not patients of this cohort.")
        return sorted(chosen)
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), not {fraction}.")
    n = math.ceil(fraction * len(unique)) if fraction > 0 and len(unique) > 1 else 0
    return sorted(np.random.default_rng(seed).choice(unique, n, replace=False).tolist())


def _plain(values: dict) -> dict:
    """Settings as h5ad-writable values (lists become arrays there anyway; None is not writable)."""
    return {k: v for k, v in values.items() if v is not None}
