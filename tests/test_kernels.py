"""The Triton kernels of the zero-count sums against the torch code they replace on CUDA: on the GPU where there is
one, else in Triton's CPU interpreter (switched on in conftest.py)."""

import pytest
import torch

pytest.importorskip("triton")

from gmvae4p.gmvae import kernels  # noqa: E402
from gmvae4p.gmvae.module import zero_count_sums  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("likelihood", ["nb", "zinb"])
def test_kernels_match_the_torch_zero_count_sums_and_their_gradients(likelihood):
    # sizes off the block sizes: rows not a multiple of 32, genes spanning two forward blocks, padding columns
    torch.manual_seed(7)
    cells, genes, width = 37, 1100, 1104
    out = (2 * torch.randn(cells, width)).bfloat16()
    zero_logits = torch.randn(cells, width).bfloat16() if likelihood == "zinb" else None
    log_library, log_theta = 8 * torch.rand(cells, 1), torch.randn(genes)
    grad_sums, grad_log_norm = torch.randn(cells), torch.randn(cells)
    on_device = [None if t is None else t.to(DEVICE) for t in (out, zero_logits, log_library, log_theta)]
    sums, log_norm, slope_sums = (t.cpu() for t in kernels.zero_count_forward(*on_device))
    grad_out, grad_zero_logits, grad_log_theta = (None if t is None else t.cpu() for t in kernels.zero_count_backward(
        *on_device, log_norm.to(DEVICE), slope_sums.to(DEVICE), grad_sums.to(DEVICE), grad_log_norm.to(DEVICE)))

    # the reference: the module's torch code (on the CPU) on float32 copies, its gradients by autograd
    leaves = {"out": out.float(), "log_library": log_library, "log_theta": log_theta}
    if zero_logits is not None:
        leaves["zero_logits"] = zero_logits.float()
    leaves = {name: t.clone().requires_grad_() for name, t in leaves.items()}
    ref_sums, ref_log_norm, *_ = zero_count_sums(likelihood, leaves["out"], leaves.get("zero_logits"),
                                                 leaves["log_library"], leaves["log_theta"],
                                                 torch.zeros(0, dtype=torch.long), n_genes=genes)
    reference = dict(zip(leaves, torch.autograd.grad(
        (ref_sums * grad_sums).sum() + (ref_log_norm[:, 0] * grad_log_norm).sum(), list(leaves.values()))))

    torch.testing.assert_close(sums, ref_sums.detach(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(log_norm, ref_log_norm[:, 0].detach(), rtol=1e-6, atol=1e-5)
    # the library's gradient is the module's grad × slope sum: it checks the slope sums
    torch.testing.assert_close(grad_sums[:, None] * slope_sums[:, None], reference["log_library"], rtol=1e-5,
                               atol=1e-4)
    torch.testing.assert_close(grad_log_theta, reference["log_theta"], rtol=1e-4,
                               atol=1e-4 * reference["log_theta"].abs().max())
    # bf16 gradients: within rounding of the float32 ones; padding columns get nothing
    assert grad_out.dtype == torch.bfloat16 and not grad_out[:, genes:].any()
    torch.testing.assert_close(grad_out.float(), reference["out"], rtol=2**-7,
                               atol=1e-4 * reference["out"].abs().max())
    if zero_logits is not None:
        torch.testing.assert_close(grad_zero_logits.float(), reference["zero_logits"], rtol=2**-7,
                                   atol=1e-4 * reference["zero_logits"].abs().max())


def test_add_at_entries_adds_in_place_like_index_add():
    dense = torch.randn(6, 40).bfloat16()
    entries = torch.tensor([3, 0, 81, 239, 120, 7])
    values = torch.randn(6)
    expected = dense.float().view(-1).index_add(0, entries, values).view(6, 40).bfloat16()
    on_device = dense.to(DEVICE)
    kernels.add_at_entries(on_device, entries.to(DEVICE), values.to(DEVICE))
    untouched = torch.ones(240, dtype=torch.bool)
    untouched[entries] = False
    assert torch.equal(on_device.cpu().view(-1)[untouched], dense.view(-1)[untouched])
    # summed in float32, rounded once to bf16 (within one unit: the interpreter's rounding may differ from the GPU's)
    torch.testing.assert_close(on_device.cpu().float(), expected.float(), rtol=2**-7, atol=0)
