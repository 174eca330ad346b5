"""Null cohorts (no disease effect): out-of-fold AUC of the bulk baselines when the outer folds are stratified by
label only, or by label × processing batch. Patient pseudobulk (log-CPM of summed counts), one unit per patient,
five StratifiedGroupKFold folds; simulated cohorts (seeds 0, 1, …) × 2 fold seeds, the rows of each cohort appended
to OUT.csv as soon as it is done. Usage: experiment.py OUT.csv N_COHORTS"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from gmvae4p.classify.baselines import BASELINES
from gmvae4p.classify.metrics import auc_with_ci
from gmvae4p.data.simulate import simulate_cohort

out = Path(sys.argv[1])
for sim_seed in range(int(sys.argv[2])):
    rows = []
    cohort = simulate_cohort(n_cells=6000, effect_size=0.0, composition_shift=0.0, n_ligand_receptor_genes=0,
                             seed=sim_seed, n_threads=2).to_anndata()
    patient = cohort.obs["ind_cov"].astype(str).to_numpy()
    sums = pd.DataFrame(cohort.X.toarray() if hasattr(cohort.X, "toarray") else cohort.X).groupby(patient).sum()
    x = np.log1p(sums.to_numpy() / sums.to_numpy().sum(1, keepdims=True) * 1e6)
    first = cohort.obs.drop_duplicates("ind_cov").set_index("ind_cov").loc[sums.index]
    label = first["disease_cov"].astype(str).to_numpy()
    batch = first["batch_cov"].astype(str).to_numpy()
    y = (label == label[0]).astype(int)
    for strata_name, strata in (("label", label), ("label_x_batch", np.char.add(label, batch))):
        for fold_seed in range(2):
            splits = list(StratifiedGroupKFold(5, shuffle=True, random_state=fold_seed)
                          .split(x, strata, groups=sums.index))
            # the largest share of a test fold's positives in one batch, against its negatives' share there
            confounding = max(abs(np.mean(batch[t][y[t] == 1] == batch[0]) - np.mean(batch[t][y[t] == 0] == batch[0]))
                              for _, t in splits)
            for method in ("logistic_regression", "random_forest", "xgboost"):
                p = np.zeros(len(y))
                for train, test in splits:
                    p[test] = BASELINES[method][1](0).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
                value, low, high = auc_with_ci(y, p)
                rows.append(dict(sim_seed=sim_seed, strata=strata_name, fold_seed=fold_seed, method=method,
                                 auc=value, low=low, high=high, excludes_half=not low <= 0.5 <= high,
                                 max_fold_confounding=confounding))
    pd.DataFrame(rows).to_csv(out, index=False, mode="a" if sim_seed else "w", header=not sim_seed)
