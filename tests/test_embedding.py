import sys

import numpy as np

from gmvae4p import keys
from gmvae4p.embedding import start_latent_umaps, umap_embedding


def test_umap_embedding_is_seeded_and_keeps_separate_groups_apart():
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(0, 1, (150, 8)), rng.normal(6, 1, (150, 8))]).astype(np.float32)
    first, again = umap_embedding(points, 3), umap_embedding(points, 3)
    assert first.shape == (300, 2) and first.dtype == np.float32 and np.array_equal(first, again)
    group = np.repeat([0, 1], 150)
    centres = np.stack([first[group == g].mean(0) for g in (0, 1)])
    nearest = np.argmin(((first[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == group).all()


def test_latent_umaps_run_in_the_background_and_are_stored_for_a_subsample(tiny_cohort):
    cells = tiny_cohort.copy()
    rng = np.random.default_rng(1)
    for basis in (keys.X_GMVAE, keys.X_GMVAE_ZSCORE):
        cells.obsm[basis] = rng.normal(size=(cells.n_obs, 4)).astype(np.float32)
    start_latent_umaps(cells, max_cells=200, seed=2)()
    stored = cells.uns[keys.UNS_GMVAE_UMAP]
    assert len(stored["cells"]) == 200 and np.all(np.diff(stored["cells"]) > 0)
    expected = umap_embedding(cells.obsm[keys.X_GMVAE][stored["cells"]], 2)
    np.testing.assert_array_equal(stored[keys.X_GMVAE], expected)  # as in this process


def test_with_cores_to_spare_each_basis_is_embedded_in_its_own_process_with_the_same_result(tiny_cohort,
                                                                                              monkeypatch):
    import concurrent.futures

    from gmvae4p import embedding

    cells = tiny_cohort.copy()
    rng = np.random.default_rng(3)
    for basis in embedding.BASES:
        cells.obsm[basis] = rng.normal(size=(cells.n_obs, 4)).astype(np.float32)
    pools, stored = [], []
    original = concurrent.futures.ProcessPoolExecutor
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor",
                        lambda n, **kwargs: pools.append(n) or original(n, **kwargs))
    for cores in (2, embedding.SPARE_CORES):
        monkeypatch.setattr(embedding.os, "cpu_count", lambda: cores)
        assert embedding.busy_cores() == (1 if cores == 2 else len(embedding.BASES))
        embedding.start_latent_umaps(cells, max_cells=150, seed=4)()
        stored.append(cells.uns.pop(keys.UNS_GMVAE_UMAP))
    assert pools == [1, 2]
    for basis in embedding.BASES:
        np.testing.assert_array_equal(stored[0][basis], stored[1][basis])


def test_without_a_writable_cache_folder_umap_code_is_compiled_as_before(monkeypatch):
    import types

    import numba
    from numba.core.dispatcher import Dispatcher

    from gmvae4p.embedding import _cache_compiled_code

    package, module = types.ModuleType("uncachable"), types.ModuleType("uncachable.kernels")
    module.double = numba.njit(lambda x: 2 * x)
    monkeypatch.setitem(sys.modules, "uncachable", package)
    monkeypatch.setitem(sys.modules, "uncachable.kernels", module)

    def no_locator(self):
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(Dispatcher, "enable_caching", no_locator)
    _cache_compiled_code(package)
    assert module.double(3) == 6
