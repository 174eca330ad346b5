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


@pytest.mark.parametrize("placement", ["resident", "streamed"])
def test_shuffled_batches_cover_every_row_once_with_its_counts(counts, placement):
    batches = CSRBatches(counts, placement=placement)
    seen = []
    for rows, batch in batches.batches(37, seed=3):
        np.testing.assert_array_equal(batch.to_dense().numpy(), counts[rows.numpy()].toarray())
        seen += rows.tolist()
    assert sorted(seen) == list(range(200)) and seen != sorted(seen)
    sizes = [len(rows) for rows, _ in batches.batches(37, seed=3)]
    assert len(sizes) == 37 and max(sizes) - min(sizes) <= 1 + (placement == "streamed")


@pytest.mark.parametrize("placement", ["resident", "streamed"])
def test_unshuffled_batches_keep_row_order_and_same_seed_same_order(counts, placement):
    batches = CSRBatches(counts, placement=placement)
    rows = torch.cat([r for r, _ in batches.batches(20)])
    assert rows.tolist() == list(range(200))
    first = torch.cat([r for r, _ in batches.batches(20, seed=1)])
    assert torch.equal(first, torch.cat([r for r, _ in batches.batches(20, seed=1)]))


@pytest.mark.parametrize("placement", ["resident", "streamed"])
def test_selected_rows_share_the_arrays_and_batches_give_positions_in_the_selection(counts, placement):
    batches = CSRBatches(counts, placement=placement)
    selected = np.random.default_rng(0).choice(200, 70, replace=False)
    subset = batches.select(selected)
    assert subset.n_rows == 70 and subset.data is batches.data
    seen = []
    for positions, batch in subset.batches(9, seed=2):
        np.testing.assert_array_equal(batch.to_dense().numpy(), counts[np.sort(selected)[positions.numpy()]].toarray())
        seen += positions.tolist()
    assert sorted(seen) == list(range(70))
    nested = subset.select([0, 69])  # positions of a selection select from it
    ((positions, batch),) = nested.batches(1)
    np.testing.assert_array_equal(batch.to_dense().numpy(), counts[np.sort(selected)[[0, 69]]].toarray())
    with pytest.raises(IndexError, match="rows"):
        batches.select([200])


def test_int32_column_ids_are_stored_and_a_batch_holds_only_non_zero_entries(counts):
    batches = CSRBatches(counts)
    assert batches.indices.dtype == torch.int32
    ((rows, batch),) = batches.batches(1)
    assert len(batch.value) == counts.nnz and batch.shape == counts.shape
    np.testing.assert_array_equal(batch.to_dense().numpy(), counts.toarray())


def test_dense_input_and_unknown_placement_are_refused(counts):
    with pytest.raises(TypeError, match="scipy CSR"):
        CSRBatches(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="placement"):
        CSRBatches(counts, placement="gpu")


def test_repeated_entries_are_summed_in_a_copy_and_offsets_delimit_rows():
    # row 0 holds gene 2 twice (3 + 4); row 1 is empty; row 2 has gene 0
    counts = sp.csr_matrix((np.array([3.0, 4.0, 1.0, 5.0], np.float32), np.array([2, 2, 1, 0]),
                            np.array([0, 3, 3, 4])), shape=(3, 4))
    _, batch = next(CSRBatches(counts).batches(1))
    np.testing.assert_array_equal(batch.to_dense().numpy(), counts.toarray())
    assert batch.offsets.tolist() == [0, 2, 2, 3] and batch.row.tolist() == [0, 0, 2]
    assert counts.nnz == 4  # the caller's matrix is left as it was


@pytest.mark.parametrize("placement", ["resident", "streamed"])
def test_fixed_shape_batches_pad_with_inert_rows_and_entries(counts, placement):
    """One shape for every batch of every epoch; padding rows have id −1 and no counts, the sink row's entries are
    zeros, and the cells' rows are as without padding."""
    batches = CSRBatches(counts, placement=placement)
    shapes, seen = set(), []
    for seed in (3, 4):
        for rows, batch in batches.batches(37, seed=seed, fixed_shape=True):
            shapes.add((len(rows), batch.shape, len(batch.value), len(batch.offsets)))
            cells = rows >= 0
            n_cells = int(cells.sum())
            assert cells[:n_cells].all() and len(rows) % 8 == 0 and len(rows) > n_cells  # room for the sink row
            dense = batch.to_dense().numpy()
            np.testing.assert_array_equal(dense[:n_cells], counts[rows[:n_cells].numpy()].toarray())
            assert not dense[n_cells:].any()
            assert batch.offsets[-1] == len(batch.value) and (batch.row.diff() >= 0).all()
            sink = batch.row == len(rows) - 1
            assert sink.sum() == batch.offsets[-1] - batch.offsets[-2] and not batch.value[sink].any()
            seen += rows[cells].tolist()
    assert len(shapes) == 1 and sorted(seen) == sorted(2 * list(range(200)))


def test_gathered_batches_are_the_fixed_shape_batches(counts):
    """``counts=False`` yields matrix rows that :meth:`CSRBatches.gather` turns into the same batch (of selected rows
    too: the rows are the matrix's, the positions the selection's)."""
    subset = CSRBatches(counts).select(np.arange(3, 200, 2))
    with_counts = list(subset.batches(9, seed=1, fixed_shape=True))
    with_rows = list(subset.batches(9, seed=1, fixed_shape=True, counts=False))
    for (positions, batch), (same_positions, rows) in zip(with_counts, with_rows, strict=True):
        assert torch.equal(positions, same_positions)
        assert torch.equal(rows[positions >= 0], 3 + 2 * positions[positions >= 0])
        for mine, theirs in zip(subset.gather(rows), batch):
            assert mine == theirs if isinstance(mine, tuple) else torch.equal(mine, theirs)
    with pytest.raises(ValueError, match="counts=False needs fixed_shape=True and resident counts"):
        next(CSRBatches(counts, placement="streamed").batches(3, fixed_shape=True, counts=False))
