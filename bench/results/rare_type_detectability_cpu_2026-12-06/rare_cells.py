"""Regime (a) at more cells per patient: is the pDC state shift readable from the unit's pDC cells at all?
LR (grouped 5-fold over patients) on the whole-unit mean log-normalized expression of pDC cells (200 HVGs, true types)."""
import dataclasses, sys
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.metrics import roc_auc_score
from gmvae4p import params
from gmvae4p.data import load_cohort
from gmvae4p.preprocess import qc_normalize_hvg
from gmvae4p.pseudobulk import plan_mixtures
from gmvae4p.modalities import expression_states
demo = params.load("/work/main/parameters/demo.yaml")
for n_cells in map(int, sys.argv[1:]):
    sim = {**dataclasses.asdict(demo.sections["simulate"]), "n_cells": n_cells, "disease_cell_types": ["pDC"],
           "effect_size": 1.0, "composition_shift": 0.0}
    adata = load_cohort(**dataclasses.asdict(demo.sections["data"]), simulate=sim, seed=demo.seed)
    oracle = adata.uns.get("simulation", {}).get("oracle_auc")
    adata = qc_normalize_hvg(adata, **dataclasses.asdict(demo.sections["preprocess"]))
    plan = plan_mixtures(adata, n_samples=1, n_cells=10, progress=False)
    values, names = expression_states(adata, plan)
    whole = (plan.obs["kind"] == "whole").to_numpy()
    cols = [i for i, n in enumerate(names) if n.startswith("pDC|")]
    X = np.nan_to_num(values[whole][:, cols]); obs = plan.obs[whole]
    y = (obs["label"].astype(str) == "SLE").astype(int).to_numpy()
    npdc = plan.cells_per_type[whole][:, plan.cell_types.index("pDC")]
    for C in (0.01, 0.1):
        p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=3000)),
                              X, y, groups=obs["patient"].astype(str), cv=GroupKFold(5), method="predict_proba")[:, 1]
        print(n_cells, "pDC per unit median", np.median(npdc), "oracle", oracle, "C", C, "AUC", round(roc_auc_score(y, p), 3), flush=True)
