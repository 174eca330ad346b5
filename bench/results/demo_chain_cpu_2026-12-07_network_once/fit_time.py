"""One GMVAE4P fit per outer fold of a demo run (its stage 03 output), on one thread, nothing else running:
PYTHONPATH=<lib> python fit_time.py RUN_FOLDER, with 4af9ad2's lib and then e7b7d2a's and later (fit_time.out)."""
import sys, time, anndata as ad, numpy as np, torch
torch.set_num_threads(1)
from gmvae4p import keys
from gmvae4p.classify.config import ClassifierConfig
from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
from gmvae4p.classify.model import GMVAE4P
samples = ad.read_h5ad(f"{sys.argv[1]}/data/pseudobulk.h5ad")
units = unit_table(samples, sorted(samples.obs["label"].astype(str).unique())[-1])
unit, kind = samples.obs["unit"].astype(str).to_numpy(), samples.obs[keys.KIND].to_numpy()
y = sample_labels(samples, units)
times = []
for fold in patient_folds(units, n_folds=5, seed=0):
    rows = {s: np.flatnonzero((kind == keys.MIXTURE) & np.isin(unit, getattr(fold, s))) for s in ("train", "validation")}
    t = time.perf_counter()
    GMVAE4P(ClassifierConfig(), n_top_genes=2000, n_top_interactions=500, device="cpu", seed=fold.index).fit(
        samples, y, train=rows["train"], validation=rows["validation"])
    times.append(time.perf_counter() - t)
print("fit seconds per fold", [round(t, 2) for t in times], "median", round(float(np.median(times)), 2))
