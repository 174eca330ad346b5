"""Dump GMVAE4P's per-learner inner OOF logits and outer test logits per cohort (for offline stack rules)."""
import pickle, sys, yaml
import anndata as ad, numpy as np, torch
torch.set_num_threads(2)
from gmvae4p import keys
from gmvae4p.classify import evaluate, stack as stackmod
from gmvae4p.classify.config import ClassifierConfig
from gmvae4p.classify.cv import patient_folds, unit_table
from gmvae4p.classify.model import GMVAE4P
import dataclasses

cohort = sys.argv[1]
base = f"/tmp/bench_out/{cohort}"
p = yaml.safe_load(open(f"{base}/parameters.yaml"))
c = p.get("classify", {})
samples = ad.read_h5ad(f"{base}/data/pseudobulk.h5ad")
cells = ad.read_h5ad(f"{base}/data/gmvae.h5ad", backed="r")
seed = p.get("seed", 0)
units = unit_table(samples, evaluate.positive_label(cells, samples, c.get("positive_label")))
folds = patient_folds(units, n_folds=c.get("n_folds", 5), validation_fraction=c.get("validation_fraction", 0.2), seed=seed)
fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
config = ClassifierConfig(**{k: v for k, v in c.items() if k in fields})
y = evaluate.sample_labels(samples, units) if hasattr(evaluate, "sample_labels") else None
from gmvae4p.classify.cv import sample_labels
y = sample_labels(samples, units)
unit = samples.obs["unit"].astype(str).to_numpy()
kind = samples.obs[keys.KIND].to_numpy()
captured = []
orig = stackmod.fit_stack
def spy(logits, yy, learners):
    captured.append((np.array(logits), np.array(yy)))
    return orig(logits, yy, learners)
import gmvae4p.classify.model as modelmod
modelmod.fit_stack = spy
out = []
for fold in folds:
    rows = {s: np.flatnonzero((kind == keys.MIXTURE) & np.isin(unit, getattr(fold, s))) for s in ("train", "validation", "test")}
    captured.clear()
    m = GMVAE4P(config, n_top_genes=c.get("n_top_genes", 2000),
                n_top_interactions=samples.uns["pseudobulk"]["settings"]["n_top_interactions"], seed=seed + fold.index)
    # record the held rows of inner folds
    inner = m._inner_folds(samples, y, np.concatenate([rows["train"], rows["validation"]]))
    m.fit(samples, y, train=rows["train"], validation=rows["validation"])
    held = np.concatenate([t[2] for t in inner]) if inner else None
    test = rows["test"]
    out.append(dict(fold=fold.index, inner_logits=captured[0][0] if captured else None,
                    inner_y=captured[0][1] if captured else None,
                    inner_unit=unit[held] if held is not None else None,
                    test_logits=m.learners.logits(samples, test), test_unit=unit[test], test_y=y[test]))
    print(cohort, fold.index, flush=True)
pickle.dump(out, open(f"/tmp/stackexp/{cohort}.pkl", "wb"))
