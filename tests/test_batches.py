import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gmvae4p.gmvae.batches import CSRBatches


@pytest.fixture
def counts():
    matrix = sp.random(200, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    matrix.data = np.ceil(matrix.data * 10)
    rows = matrix.tolil()
    rows[5] = 0  # an empty row must come out as zeros
    return rows.tocsr()


def test_planned_batches_densify_to_the_same_rows(counts):
    batches = CSRBatches(counts)
    order = np.random.default_rng(0).permutation(200)
    plan = batches.plan(order, 64)
    assert [len(rows) for rows, _ in plan] == [64, 64, 64, 8]
    seen = []
    for rows, nnz in plan:
        dense = batches.dense(rows, nnz)
        np.testing.assert_array_equal(dense.numpy(), counts[rows.numpy()].toarray())
        seen += rows.tolist()
    assert seen == order.tolist()


def test_a_shard_keeps_only_its_rows_and_bf16_is_exact_for_small_counts(counts):
    shard = np.arange(1, 200, 2)
    batches = CSRBatches(counts, rows=shard)
    assert batches.n_rows == 100 and batches.data.numel() == counts[shard].nnz
    (rows, nnz), = batches.plan(np.arange(100), 100)
    dense = batches.dense(rows, nnz, dtype=torch.bfloat16)
    np.testing.assert_array_equal(dense.float().numpy(), counts[shard].toarray())


def test_dense_input_is_refused():
    with pytest.raises(TypeError, match="scipy CSR"):
        CSRBatches(np.zeros((3, 3)))
