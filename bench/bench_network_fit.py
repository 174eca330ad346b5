"""One fit of GMVAE4P's modality network, for timing its training step: fold 0 of a run's pseudobulk samples (stage
03's ``data/pseudobulk.h5ad``), the run's classifier settings, a fixed number of epochs (no early stopping), one
torch thread (as each fold worker has on two cores). The library comes from ``PYTHONPATH``, so that two commits can
be timed against each other, run in turn (A B A B …) under ``/usr/bin/time -v``:

    PYTHONPATH=lib /usr/bin/time -v python bench/bench_network_fit.py outputs/demo
"""

import argparse
import dataclasses
import time

import anndata as ad
import numpy as np
import torch

from gmvae4p.classify.config import ClassifierConfig
from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
from gmvae4p.classify.model import ModalityNetwork

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("run", help="a chain's output folder (stages 01-03 done)")
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()

torch.set_num_threads(1)
samples = ad.read_h5ad(f"{args.run}/data/pseudobulk.h5ad")
units = unit_table(samples, sorted(samples.obs["label"].astype(str).unique())[-1])
fold = patient_folds(units, n_folds=5, seed=0)[0]
unit = samples.obs["unit"].astype(str).to_numpy()
train = np.flatnonzero(np.isin(unit, np.concatenate([fold.train, fold.validation])))
config = dataclasses.replace(ClassifierConfig(), max_epochs=args.epochs)
start = time.perf_counter()
network = ModalityNetwork(config, device="cpu").fit(samples, sample_labels(samples, units), train=train)
print(f"{len(network.history)} epochs in {time.perf_counter() - start:.2f} s")
