"""How far the draw of the stack's inner folds alone moves GMVAE4P: stage 04's outer folds, seeds and settings of a
cohort folder, GMVAE4P refitted with its inner folds drawn at other seeds (the learners' own seeds unchanged), pooled
per-unit AUC, bulk and scRNA mode. Usage: inner_draws.py COHORT_FOLDER DRAW [DRAW ...] (draw 0: stage 04's own)."""

import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
import yaml

from gmvae4p import keys
from gmvae4p.classify import model as model_module
from gmvae4p.classify.cv import read_folds, sample_labels
from gmvae4p.classify.metrics import auc, unit_probabilities
from gmvae4p.params import check_section

torch.set_num_threads(1)  # as each fold worker of stage 04 runs
folder, draws = Path(sys.argv[1]), [int(d) for d in sys.argv[2:]]
parameters = yaml.safe_load((folder / "parameters.yaml").read_text())
settings = check_section("classify", parameters["classify"], where=str(folder))
samples = ad.read_h5ad(folder / "data" / "pseudobulk.h5ad")
units, folds = read_folds(pd.read_csv(folder / "tables" / "folds.csv"))
y = sample_labels(samples, units)
unit = samples.obs["unit"].astype(str).to_numpy()
mixture = (samples.obs[keys.KIND] == keys.MIXTURE).to_numpy()
original = model_module.patient_folds

for draw in draws:
    # the inner folds' seed is the model's seed plus the draw; nothing else the model draws changes
    model_module.patient_folds = lambda units, *, n_folds, seed, **kw: original(units, n_folds=n_folds,
                                                                                seed=seed + draw, **kw)
    parts = []
    for fold in folds:
        rows = {side: np.flatnonzero(mixture & np.isin(unit, getattr(fold, side)))
                for side in ("train", "validation", "test")}
        model = model_module.GMVAE4P(settings, n_top_genes=settings.n_top_genes,
                                     n_top_interactions=settings.n_top_interactions, device="cpu",
                                     seed=parameters["seed"] + fold.index)
        model.fit(samples, y, train=rows["train"], validation=rows["validation"])
        for mode in (False, True):
            p = model.predict(samples, rows["test"], use_true=mode).probability
            parts.append(unit_probabilities(pd.DataFrame({"unit": unit[rows["test"]], "label": y[rows["test"]],
                                                          "probability": p})).assign(scrna=mode))
    pooled = pd.concat(parts)
    print(json.dumps({"cohort": folder.name, "draw": draw,
                      "auc": auc(*pooled[~pooled["scrna"]][["label", "probability"]].to_numpy().T),
                      "auc_scrna": auc(*pooled[pooled["scrna"]][["label", "probability"]].to_numpy().T)}),
          flush=True)
