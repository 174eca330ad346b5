"""The scikit-learn baselines over the demo run's five folds in one process with nothing beside it, as stage 04 fits
them. Usage: baselines_alone.py RUN METHOD [METHOD ...]"""

import sys
import time

import anndata as ad

from gmvae4p.classify.baselines import fit_predict_baselines
from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table

samples = ad.read_h5ad(f"{sys.argv[1]}/data/pseudobulk.h5ad")
units = unit_table(samples, sorted(samples.obs["label"].astype(str).unique())[-1])
folds = patient_folds(units, n_folds=5, seed=0)
y = sample_labels(samples, units)
for method in sys.argv[2:]:
    start = time.perf_counter()
    fit_predict_baselines(samples, y, folds, methods=[method])
    print(method, round(time.perf_counter() - start, 1))
