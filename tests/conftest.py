import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels are decorated for Triton's CPU interpreter, so that tests/test_kernels.py runs them
# (Triton reads the switch when a kernel is decorated: before anything imports gmvae4p.gmvae).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gmvae4p.data import simulate_cohort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
KANG = SHARED_DATA / "kang2018_kang_se.h5ad"
KANG_PAIRED = SHARED_DATA / "kang2018_example_sce.h5ad"
COLUMNS = {"patient_key": "ind_cov", "cell_type_key": "ct_cov", "label_key": "disease_cov", "batch_key": "batch_cov"}
TINY = {"n_patients": 8, "n_cells": 800, "n_genes": 300, "n_marker_genes": 10, "n_disease_genes": 20}


@pytest.fixture(scope="session")
def tiny_cohort():
    """A small simulated cohort as AnnData (treat as read-only; copy before changing it)."""
    return simulate_cohort(**TINY, seed=1).to_anndata()


def real_data(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real test data {path} is not present (it lives in ../shared/data beside the repository)")
    return path
