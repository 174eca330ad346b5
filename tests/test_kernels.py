"""The Triton kernels (nb/zinb likelihood, batch gathering) against the torch code they replace on CUDA: on the GPU
where there is one, else in Triton's CPU interpreter (switched on in conftest.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytest.importorskip("triton")

from gmvae4p.gmvae import kernels  # noqa: E402
from gmvae4p.gmvae.batches import _select_rows  # noqa: E402
from gmvae4p.gmvae.module import SparseCounts, count_log_likelihood  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("likelihood", ["nb", "zinb"])
def test_kernels_match_the_torch_likelihood_and_its_gradients(likelihood):
    # sizes off the block sizes: rows not a multiple of 8, genes spanning two forward blocks, padding columns, cells
    # whose entries span several entry blocks and one with none, and a last, masked "sink" row of value-0 entries
    # whose columns repeat (as batches.py pads a fixed-shape batch); counts from 1 to thousands (lgamma and
    # digamma on both sides of their recurrence's threshold)
    torch.manual_seed(7)
    cells, genes, width = 37, 1100, 1104
    dense = torch.where(torch.rand(cells, genes) < 0.3, torch.randint(1, 3000, (cells, genes)) ** 0.5 // 1, 0.0)
    dense[5] = dense[-1] = 0
    plain = SparseCounts.from_dense(dense)
    sink = torch.arange(2 * genes + 50) % genes
    counts = SparseCounts(torch.cat([plain.row, torch.full_like(sink, cells - 1)]), torch.cat([plain.col, sink]),
                          torch.cat([plain.value, torch.zeros(len(sink))]),
                          torch.cat([plain.offsets[:-1], plain.offsets[-1:] + len(sink)]), plain.shape)
    assert counts.offsets.diff()[:-1].max() > kernels.ENTRY_FORWARD_BLOCK
    zinb = likelihood == "zinb"
    inputs = {"out": (2 * torch.randn(cells, width)).bfloat16(), "bias": torch.randn(width),
              "log_library": 6 + 3 * torch.rand(cells, 1), "log_theta": 1.5 * torch.randn(genes)}
    if zinb:
        inputs.update(zero_logits=torch.randn(cells, width).bfloat16(), zero_bias=torch.randn(width))
    order = ("out", "zero_logits", "bias", "zero_bias", "log_library", "log_theta")
    grad_sums = torch.randn(cells)
    grad_sums[-1] = 0  # the sink row is masked out of the loss

    on_device = {name: t.to(DEVICE) for name, t in inputs.items()}
    device_counts = SparseCounts(*(t.to(DEVICE) for t in counts[:4]), counts.shape)
    sums, log_norm, slope_sums, entry_grads = kernels.count_forward(
        *(on_device.get(name) for name in order), device_counts.row, device_counts.col, device_counts.value)
    grads = kernels.count_backward(*(on_device.get(name) for name in order), log_norm, slope_sums, entry_grads,
                                   device_counts.row, device_counts.col, grad_sums.to(DEVICE))
    grads = dict(zip(("out", "zero_logits", "bias", "zero_bias", "log_theta"), grads))

    # the reference: the module's torch code (on the CPU) on float32 copies of the same inputs, through autograd
    leaves = {name: t.float().clone().requires_grad_() for name, t in inputs.items()}
    ref_sums = count_log_likelihood(*(leaves.get(name) for name in order), counts)
    reference = dict(zip(leaves, torch.autograd.grad((ref_sums * grad_sums).sum(), list(leaves.values()))))

    torch.testing.assert_close(sums.cpu(), ref_sums.detach(), rtol=1e-5, atol=1e-2)
    # the library's gradient is the cell's gradient × its slope sum: it checks the slope sums
    torch.testing.assert_close(grad_sums[:, None] * slope_sums.cpu()[:, None], reference["log_library"], rtol=1e-4,
                               atol=1e-3)
    assert grads["log_theta"].dtype == torch.float32
    torch.testing.assert_close(grads["log_theta"].cpu(), reference["log_theta"], rtol=1e-4,
                               atol=1e-4 * reference["log_theta"].abs().max())
    # bf16 gradients: within rounding of the float32 ones; padding columns get nothing; a bias's gradient (float32)
    # is the column sum of its output's
    for name, bias in [("out", "bias"), ("zero_logits", "zero_bias")][:2 if zinb else 1]:
        assert grads[name].dtype == torch.bfloat16 and not grads[name][:, genes:].any()
        torch.testing.assert_close(grads[name].cpu().float(), reference[name], rtol=2**-7,
                                   atol=1e-4 * reference[name].abs().max())
        assert grads[bias].dtype == torch.float32
        column_sums = grads[name].cpu().float().sum(0)  # summed in another order than on the GPU
        torch.testing.assert_close(grads[bias].cpu(), column_sums, rtol=1e-5, atol=1e-5 * column_sums.abs().max())


@pytest.mark.parametrize("sink", [False, True])
def test_gathered_rows_match_the_torch_gathering(sink):
    """Entry rows, columns and values of a batch of CSR rows (an empty one, a repeated one, −1 padding rows, and with
    ``sink`` the entries beyond the rows' own in the last row) as the torch code makes them, over several blocks."""
    matrix = sp.random(300, 500, density=0.1, format="lil", random_state=3, dtype=np.float32)
    matrix[31] = 0
    matrix = matrix.tocsr()
    indptr, indices, data = (torch.from_numpy(a) for a in (matrix.indptr.astype(np.int64), matrix.indices, matrix.data))
    rows = torch.tensor([7, 299, 0, 150, 150, 31] * 5 + [-1, -1])
    n_entries = int(np.diff(matrix.indptr)[rows[rows >= 0].numpy()].sum()) + (2 * kernels.GATHER_BLOCK + 3) * sink
    expected = _select_rows(indptr, indices, data, rows, n_entries, 500, sink=sink)
    gathered = kernels.gather_rows(*(t.to(DEVICE) for t in (indptr, indices, data, rows, expected.offsets)),
                                   n_entries, 500)
    for ours, theirs in zip(gathered, expected):
        torch.testing.assert_close(ours.cpu(), theirs, rtol=0, atol=0)


def test_importing_the_training_code_and_the_fold_workers_leaves_the_inductor_unloaded():
    """Registering the likelihood's ops imports ``torch._inductor`` (about a second): that waits for their first use,
    which notebooks and CPU fold workers never make."""
    code = "import sys, gmvae4p.gmvae.train, gmvae4p.classify.workers; print('torch._inductor' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.strip() == "False"
