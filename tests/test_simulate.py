import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from sklearn.metrics import roc_auc_score

from gmvae4p import keys
from gmvae4p.data import simulate_cohort
from gmvae4p.data.simulate import CELL_TYPES, DISEASE, HEALTHY, _sample_nb_csr, auc

from conftest import TINY


def test_same_seed_same_cohort_other_seed_differs():
    a, b, c = (simulate_cohort(**TINY, seed=s, n_threads=t) for s, t in [(3, 1), (3, 2), (4, 2)])
    assert (a.counts != b.counts).nnz == 0
    assert a.obs.equals(b.obs)
    assert (a.counts != c.counts).nnz > 0


def test_counts_are_sparse_integers_with_lupus_columns(tiny_cohort):
    X = tiny_cohort.X
    assert sp.issparse(X) and X.format == "csr" and X.has_sorted_indices
    assert np.all(X.data > 0) and np.all(X.data == np.round(X.data))
    assert tiny_cohort.shape == (TINY["n_cells"], TINY["n_genes"])
    assert {"ind_cov", "ct_cov", "disease_cov", "batch_cov"} <= set(tiny_cohort.obs)
    assert set(tiny_cohort.obs["ct_cov"].cat.categories) == set(CELL_TYPES)
    labels = tiny_cohort.obs.groupby("ind_cov", observed=True)["disease_cov"].nunique()
    assert (labels == 1).all()
    assert tiny_cohort.var_names.is_unique


def test_ground_truth_in_uns(tiny_cohort):
    truth = tiny_cohort.uns[keys.UNS_SIMULATION]
    assert len(truth["disease_genes"]) == TINY["n_disease_genes"]
    assert set(truth["disease_genes"]) <= set(tiny_cohort.var_names)
    assert truth["disease_genes"][0] == "IFI27"  # the program is named after interferon-stimulated genes
    positive = truth["patient_label"] == DISEASE
    assert truth["oracle_auc"] == pytest.approx(roc_auc_score(positive, truth["patient_activity"]))
    per_patient = tiny_cohort.obs.groupby("ind_cov", observed=True)["disease_cov"].first()
    assert list(per_patient[truth["patients"]]) == list(truth["patient_label"])


def test_oracle_auc_below_one_and_set_by_activity_overlap():
    overlapping = simulate_cohort(**{**TINY, "n_patients": 200, "n_cells": 4000}, activity_sd=0.6, seed=0)
    separated = simulate_cohort(**{**TINY, "n_patients": 200, "n_cells": 4000}, activity_sd=0.05, seed=0)
    assert 0.75 < overlapping.truth["oracle_auc"] < 0.97
    assert separated.truth["oracle_auc"] == 1.0


def _disease_log_fold_change(cohort):
    """Mean log fold change (SLE vs healthy) of disease genes minus that of other genes, in the program's types."""
    X = cohort.counts
    normalized = sp.diags(1e4 / np.asarray(X.sum(1)).ravel()) @ X
    in_program = cohort.obs["ct_cov"].isin(cohort.truth["disease_cell_types"]).to_numpy()
    sle = (cohort.obs["disease_cov"] == DISEASE).to_numpy()
    mean_sle = np.asarray(normalized[in_program & sle].mean(0)).ravel() + 1e-3
    mean_healthy = np.asarray(normalized[in_program & ~sle].mean(0)).ravel() + 1e-3
    lfc = np.log(mean_sle / mean_healthy)
    is_disease_gene = np.isin(cohort.var_names, cohort.truth["disease_genes"])
    return lfc[is_disease_gene].mean() - lfc[~is_disease_gene].mean()


def test_effect_size_drives_the_disease_program_and_zero_gives_a_null_cohort():
    big = {**TINY, "n_patients": 40, "n_cells": 8000, "activity_sd": 0.3}
    assert _disease_log_fold_change(simulate_cohort(**big, effect_size=1.0, seed=2)) > 0.5
    assert abs(_disease_log_fold_change(simulate_cohort(**big, effect_size=0.0, seed=2))) < 0.1


@pytest.mark.parametrize("n_patients, n_batches", [(60, 2), (13, 3)])
def test_every_batch_holds_each_label_evenly_so_a_batch_cannot_predict_it(n_patients, n_batches):
    cohort = simulate_cohort(**{**TINY, "n_patients": n_patients, "n_cells": 20 * n_patients}, n_batches=n_batches,
                             disease_fraction=0.4, seed=5)
    patients = cohort.obs.groupby("ind_cov", observed=True)[["disease_cov", "batch_cov"]].first()
    per_batch = pd.crosstab(patients["batch_cov"], patients["disease_cov"])
    assert per_batch.shape == (n_batches, 2)
    assert (per_batch.max() - per_batch.min() <= 1).all()  # each label dealt evenly
    assert per_batch.sum(axis=1).max() - per_batch.sum(axis=1).min() <= 1  # and the batches as large as each other


def test_low_quality_cells_have_high_mito_share(tiny_cohort):
    X = tiny_cohort.X
    mito = np.asarray(X[:, tiny_cohort.var_names.str.startswith("MT-")].sum(1)).ravel() / np.asarray(X.sum(1)).ravel()
    low = tiny_cohort.obs[keys.LOW_QUALITY].to_numpy()
    assert low.any() and mito[low].min() > mito[~low].max()


@pytest.mark.parametrize("zero_inflation", [0.0, 0.3])
def test_sampler_matches_the_zinb_distribution(zero_inflation):
    rng = np.random.default_rng(0)
    profile = np.array([2e-5, 2e-4, 1e-3, 4e-3, 0.3, 0.6948])
    theta = np.array([0.5, 2.0, 5.0, 1.0, 3.0, 10.0])
    library = np.full(30_000, 800.0)  # genes 0-3 take the sparse path (mean < 1), 4-5 the dense one
    nnz, indices, values = _sample_nb_csr(rng, library, profile, theta, zero_inflation)
    X = sp.csr_matrix((values, indices, np.r_[0, np.cumsum(nnz)]), shape=(library.size, 6)).toarray()
    for g in range(6):
        mean = library[0] * profile[g]
        nb = stats.nbinom(theta[g], theta[g] / (theta[g] + mean))
        for k in range(3):
            expected = (1 - zero_inflation) * nb.pmf(k) + (zero_inflation if k == 0 else 0.0)
            observed = np.mean(X[:, g] == k)
            assert abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / library.size) + 1e-4, (g, k)
        zinb_mean = (1 - zero_inflation) * mean
        zinb_var = (1 - zero_inflation) * (nb.var() + mean**2) - zinb_mean**2
        assert abs(X[:, g].mean() - zinb_mean) < 5 * np.sqrt(zinb_var / library.size)


def test_auc_counts_ties_half():
    assert auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    scores, positive = np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])
    assert auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))


@pytest.mark.parametrize("bad, message", [
    ({"n_genes": 50}, "n_genes=50 is too few"),
    ({"zero_inflation": 1.0}, "zero_inflation must lie in"),
    ({"disease_cell_types": ["Neutrophil"]}, "disease_cell_types names ['Neutrophil']"),
    ({"n_cells": 100}, "fewer than 20 cells per patient"),
    ({"n_patients": 1}, "leaves a class empty"),
])
def test_bad_arguments_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=None) as err:
        simulate_cohort(**{**TINY, **bad})
    assert message in str(err.value)


def test_labels_are_the_lupus_values(tiny_cohort):
    assert set(tiny_cohort.obs["disease_cov"].cat.categories) == {HEALTHY, DISEASE}
