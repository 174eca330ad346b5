import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from gmvae4p.data import simulate_cohort
from gmvae4p.gmvae.batches import CSRBatches
from gmvae4p.gmvae.module import GMVAEModule
from gmvae4p.gmvae.train import TrainConfig, epoch_line, predict, train


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(n_patients=12, n_cells=3000, n_genes=400, n_marker_genes=15, n_disease_genes=20, seed=5)


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
def test_supervised_gmvae_calls_cell_types_of_held_out_patients(cohort, likelihood):
    patients = cohort.obs["ind_cov"].to_numpy()
    held_out = np.isin(patients, ["P001", "P002", "P003"])
    types = torch.from_numpy(cohort.obs["ct_cov"].cat.codes.to_numpy().astype(np.int64))
    train_batches = CSRBatches(cohort.counts, rows=np.flatnonzero(~held_out))
    test_batches = CSRBatches(cohort.counts, rows=np.flatnonzero(held_out))
    torch.manual_seed(0)
    module = GMVAEModule(cohort.counts.shape[1], 8, latent_dim=10, hidden_dims=(128, 64), likelihood=likelihood)
    lines = []
    history = train(module, train_batches, types[~held_out], config=TrainConfig(epochs=8, batch_size=256),
                    validation=(test_batches, types[held_out]), log=lines.append)
    assert len(lines) == 8 and lines[-1].startswith("Epoch 8/8: loss=") and "val_acc=" in lines[-1]
    assert history[-1]["loss"] < history[0]["loss"]
    logits, _ = predict(module, test_batches, 512)
    balanced = balanced_accuracy_score(types[held_out].numpy(), logits.argmax(-1).numpy())
    assert balanced >= 0.98, balanced


def test_epoch_line_has_the_documented_fields():
    line = epoch_line({"epoch": 3, "loss": 1.5, "recon": 1.0, "kl": 0.4, "ce": 0.1, "acc": 0.9, "val_acc": 0.85,
                       "cells_per_s": 12345.6}, 10)
    assert line == ("Epoch  3/10: loss=1.5, recon=1, kl=0.4, ce=0.1, acc=0.9000, val_acc=0.8500, cells/s=12,346")
