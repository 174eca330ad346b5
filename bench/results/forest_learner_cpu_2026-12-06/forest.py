"""Add a random-forest learner to GMVAE4P's stack, offline: the other learners' logits come from the dump of
bench/results/stack_rules_cpu_2026-12-06 (same outer and inner folds); the forest is fitted here on the same rows."""
import pickle, sys, yaml, dataclasses
import anndata as ad, numpy as np, pandas as pd
from sklearn.ensemble import RandomForestClassifier
from gmvae4p import keys
from gmvae4p.classify import evaluate
from gmvae4p.classify.config import ClassifierConfig
from gmvae4p.classify.cv import patient_folds, unit_table, sample_labels, most_variable
from gmvae4p.classify.model import GMVAE4P, feature_block

cohort, trees = sys.argv[1], int(sys.argv[2])
base = f"/tmp/bench_s04/{cohort}"
p = yaml.safe_load(open(f"{base}/parameters.yaml"))
c = p.get("classify", {})
samples = ad.read_h5ad(f"{base}/data/pseudobulk.h5ad")
cells = ad.read_h5ad(f"{base}/data/gmvae.h5ad", backed="r")
seed = p.get("seed", 0)
units = unit_table(samples, evaluate.positive_label(cells, samples, c.get("positive_label")))
folds = patient_folds(units, n_folds=c.get("n_folds", 5), validation_fraction=c.get("validation_fraction", 0.2), seed=seed)
fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
config = ClassifierConfig(**{k: v for k, v in c.items() if k in fields})
y = sample_labels(samples, units)
unit = samples.obs["unit"].astype(str).to_numpy()
kind = samples.obs[keys.KIND].to_numpy()
expression = feature_block(samples, "bulk")
dump = pickle.load(open(f"/tmp/stackexp/{cohort}.pkl", "rb"))
n_top = c.get("n_top_genes", 2000)

def forest_logit(fit_rows, rows, s):
    genes = most_variable(expression, fit_rows, n_top)
    m = RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, class_weight="balanced", n_jobs=2,
                               random_state=s).fit(expression[np.ix_(fit_rows, genes)], y[fit_rows])
    q = np.clip(m.predict_proba(expression[np.ix_(rows, genes)])[:, 1], 1e-3, 1 - 1e-3)
    return np.log(q) - np.log1p(-q)

for fold, d in zip(folds, dump):
    rows = {s: np.flatnonzero((kind == keys.MIXTURE) & np.isin(unit, getattr(fold, s))) for s in ("train", "validation", "test")}
    m = GMVAE4P(config, seed=seed + fold.index)
    fit_rows = np.concatenate([rows["train"], rows["validation"]])
    inner = m._inner_folds(samples, y, fit_rows)
    if inner is None:
        d["inner_forest"] = None
    else:
        held = np.concatenate([t[2] for t in inner])
        assert (unit[held] == d["inner_unit"]).all()
        d["inner_forest"] = np.concatenate([forest_logit(np.concatenate([a, b]), t, seed + fold.index + 1000 * (i + 1))
                                            for i, (a, b, t) in enumerate(inner)])
    assert (unit[rows["test"]] == d["test_unit"]).all()
    d["test_forest"] = forest_logit(fit_rows, rows["test"], seed + fold.index)
    print(cohort, fold.index, flush=True)
pickle.dump(dump, open(f"/tmp/forestexp/{cohort}_{trees}.pkl", "wb"))
