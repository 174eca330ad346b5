"""GMVAE4P's pooled out-of-fold AUC with stack_folds = K inner folds (default 3), same outer folds and seeds as stage 04."""
import sys, yaml, dataclasses, json, time
import anndata as ad, numpy as np, pandas as pd, torch
torch.set_num_threads(2)
from sklearn.metrics import roc_auc_score
from gmvae4p import keys
from gmvae4p.classify import evaluate
from gmvae4p.classify.config import ClassifierConfig
from gmvae4p.classify.cv import patient_folds, unit_table, sample_labels
from gmvae4p.classify.model import GMVAE4P

base, k = sys.argv[1], int(sys.argv[2])
p = yaml.safe_load(open(f"{base}/parameters.yaml"))
c = p.get("classify", {})
samples = ad.read_h5ad(f"{base}/data/pseudobulk.h5ad")
cells = ad.read_h5ad(f"{base}/data/gmvae.h5ad", backed="r")
seed = p.get("seed", 0)
units = unit_table(samples, evaluate.positive_label(cells, samples, c.get("positive_label")))
folds = patient_folds(units, n_folds=c.get("n_folds", 5), validation_fraction=c.get("validation_fraction", 0.2), seed=seed)
fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
config = ClassifierConfig(**{**{kk: v for kk, v in c.items() if kk in fields}, "stack_folds": k})
y = sample_labels(samples, units)
unit = samples.obs["unit"].astype(str).to_numpy()
kind = samples.obs[keys.KIND].to_numpy()
frames, start = [], time.time()
for fold in folds:
    rows = {s: np.flatnonzero((kind == keys.MIXTURE) & np.isin(unit, getattr(fold, s))) for s in ("train", "validation", "test")}
    m = GMVAE4P(config, n_top_genes=c.get("n_top_genes", 2000),
                n_top_interactions=c.get("n_top_interactions", 500), seed=seed + fold.index)
    m.fit(samples, y, train=rows["train"], validation=rows["validation"])
    test = rows["test"]
    frames.append(pd.DataFrame({"unit": unit[test], "y": y[test], "bulk": m.predict(samples, test).probability,
                                "scrna": m.predict(samples, test, use_true=True).probability}))
d = pd.concat(frames).groupby("unit").mean()
out = {"cohort": base.rstrip("/").split("/")[-1], "stack_folds": k, "auc": roc_auc_score(d.y, d.bulk),
       "auc_scrna": roc_auc_score(d.y, d.scrna), "seconds": round(time.time() - start, 1)}
print(json.dumps(out), flush=True)
