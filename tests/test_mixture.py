import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SklearnMixture

from gmvae4p.gmvae.mixture import fit_gaussian_mixture, log_responsibilities

MEANS = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 2.0], [0.0, 7.0, -3.0]])
SDS = np.array([[1.0, 0.5, 0.3], [0.4, 1.2, 0.8], [0.7, 0.7, 1.5]])
WEIGHTS = np.array([0.6, 0.3, 0.1])


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    component = rng.choice(3, 4000, p=WEIGHTS)
    return rng.normal(MEANS[component], SDS[component]), component


def test_em_recovers_the_components_of_separated_blobs(blobs):
    points, component = blobs
    fit = fit_gaussian_mixture(torch.from_numpy(points), 3, seed=0)
    order = [int(np.argmin(((fit.means.numpy() - m) ** 2).sum(1))) for m in MEANS]
    assert sorted(order) == [0, 1, 2]
    # separated blobs: EM lands on each blob's own sample statistics
    for k, fitted in enumerate(order):
        members = points[component == k]
        np.testing.assert_allclose(fit.means.numpy()[fitted], members.mean(0), atol=0.02)
        np.testing.assert_allclose(fit.variances.numpy()[fitted], members.var(0), rtol=0.02)
        assert fit.weights.numpy()[fitted] == pytest.approx((component == k).mean(), abs=0.005)
    log_resp, _ = log_responsibilities(torch.from_numpy(points), fit.means.double(), fit.variances.double(),
                                       fit.weights.double())
    assert (np.asarray(order).argsort()[log_resp.argmax(1).numpy()] == component).mean() > 0.99


def test_em_reaches_the_likelihood_of_scikit_learn(blobs):
    points, _ = blobs
    ours = fit_gaussian_mixture(torch.from_numpy(points), 3, seed=1)
    theirs = SklearnMixture(3, covariance_type="diag", n_init=3, random_state=0).fit(points)
    assert ours.log_likelihood == pytest.approx(theirs.score(points), abs=1e-3)


def test_fewer_points_than_components_is_refused():
    with pytest.raises(ValueError, match="at least as many points"):
        fit_gaussian_mixture(torch.zeros(2, 3), 3)
