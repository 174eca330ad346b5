"""The nb/zinb zero-count sums of :mod:`.module` as Triton kernels, for CUDA.

What every gene contributes at a zero count is the one part of the likelihood evaluated on all cells × genes, with
several transcendental functions per entry. Left to ``torch.compile``, its forward and backward took four or five
fused kernels that each recompute those functions and pass float32 intermediates through memory. Here the forward is
one kernel (per cell: the log-softmax normaliser, the sum of the zero-count terms and of their slopes by log μ) and the
backward one kernel (the gradients by the decoder outputs and zero logits in their own dtype, and per block of cells
the column sums for log θ). The arithmetic is that of :mod:`.distributions` (checked against it in the tests, on the
GPU and in Triton's CPU interpreter).

Importable without Triton: :data:`AVAILABLE` says whether the kernels can run.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the module's torch code path serves
    triton = None

AVAILABLE = triton is not None

FORWARD_BLOCK = 1024
# 8 × 256 entries per program over 8 warps: 8 per thread. A 32 × 256 tile over 4 warps (64 per thread) spilled
# registers and took 3.3 ms per 4096-cell zinb step on an H100.
BACKWARD_ROWS, BACKWARD_COLUMNS, BACKWARD_WARPS = 8, 256, 8
ENTRY_BLOCK = 1024


def zero_count_forward(out: torch.Tensor, zero_logits: torch.Tensor | None, log_library: torch.Tensor,
                       log_theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per cell (float32): the zero-count terms summed over the first ``len(log_theta)`` columns of ``out``, the
    log-sum-exp of those columns, and the sum of the terms' derivatives by log μ. ``log_library``: (cells, 1)."""
    n_rows, width = out.shape
    sums, log_norm, slope_sums = (torch.empty(n_rows, device=out.device, dtype=torch.float32) for _ in range(3))
    _forward[(n_rows,)](out, out if zero_logits is None else zero_logits, log_library, log_theta, sums, log_norm,
                        slope_sums, len(log_theta), width, ZINB=zero_logits is not None, BLOCK=FORWARD_BLOCK)
    return sums, log_norm, slope_sums


def zero_count_backward(out: torch.Tensor, zero_logits: torch.Tensor | None, log_library: torch.Tensor,
                        log_theta: torch.Tensor, log_norm: torch.Tensor, slope_sums: torch.Tensor,
                        grad_sums: torch.Tensor, grad_log_norm: torch.Tensor):
    """Gradients by ``out`` and ``zero_logits`` (their dtype, zero in padding columns) and by ``log_theta`` (float32),
    given the forward's per-cell results and the gradients of its sums and normalisers."""
    n_rows, width = out.shape
    n_genes = len(log_theta)
    grad_out = torch.empty_like(out)
    grad_zero_logits = None if zero_logits is None else torch.empty_like(zero_logits)
    row_blocks = triton.cdiv(n_rows, BACKWARD_ROWS)
    theta_partials = torch.empty(row_blocks, n_genes, device=out.device, dtype=torch.float32)
    grid = (row_blocks, triton.cdiv(width, BACKWARD_COLUMNS))
    _backward[grid](out, out if zero_logits is None else zero_logits, log_library, log_theta, log_norm, slope_sums,
                    grad_sums.float().contiguous(), grad_log_norm.float().contiguous(), grad_out,
                    grad_out if grad_zero_logits is None else grad_zero_logits, theta_partials, n_rows, n_genes, width,
                    ZINB=zero_logits is not None, BLOCK_ROWS=BACKWARD_ROWS, BLOCK_COLUMNS=BACKWARD_COLUMNS,
                    num_warps=BACKWARD_WARPS)
    return grad_out, grad_zero_logits, theta_partials.sum(0)


def add_at_entries(dense: torch.Tensor, entries: torch.Tensor, values: torch.Tensor) -> None:
    """``dense.view(-1)[entries] += values`` in place, summed in float32, for distinct ``entries`` (or repeated ones
    whose values are 0): plain loads and stores, no atomics. A kernel rather than ``index_add_``, which the compiled
    backward preceded by a full copy of ``dense``."""
    n = len(entries)
    _add_at_entries[(triton.cdiv(n, ENTRY_BLOCK),)](dense, entries, values, n, BLOCK=ENTRY_BLOCK)


if AVAILABLE:
    @triton.jit
    def _softplus_and_sigmoid(x):
        """As :func:`.distributions.softplus_and_sigmoid`: one exp(−|x|) for both."""
        e = tl.exp(-tl.abs(x))
        return tl.maximum(x, 0.0) + tl.log(1.0 + e), tl.where(x >= 0, 1.0, e) / (1.0 + e)

    @triton.jit
    def _terms(x, log_norm, log_library, log_theta, zero_logit, ZINB: tl.constexpr):
        """Zero-count term and its derivatives by log μ, log θ and (zinb) the zero logit, for decoder outputs ``x``."""
        log_mu = x - log_norm + log_library
        softplus, sigmoid = _softplus_and_sigmoid(log_mu - log_theta)
        theta = tl.exp(log_theta)
        value = -theta * softplus
        by_log_mu = -theta * sigmoid
        by_log_theta = value - by_log_mu
        by_zero_logit = 0.0 * x
        if ZINB:
            softplus_zero, by_nb_zero = _softplus_and_sigmoid(value - zero_logit)
            softplus_inflation, inflation_sigmoid = _softplus_and_sigmoid(-zero_logit)
            value = softplus_zero - softplus_inflation
            by_log_mu = by_nb_zero * by_log_mu
            by_log_theta = by_nb_zero * by_log_theta
            by_zero_logit = inflation_sigmoid - by_nb_zero
        return value, by_log_mu, by_log_theta, by_zero_logit

    @triton.jit
    def _forward(out_ptr, zero_logits_ptr, log_library_ptr, log_theta_ptr, sums_ptr, log_norm_ptr, slope_sums_ptr,
                 n_genes, width, ZINB: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        base = row.to(tl.int64) * width
        columns = tl.arange(0, BLOCK)
        # three passes over the row (the later ones mostly from L2): its maximum, its sum of exponentials, the terms
        largest = tl.full([BLOCK], float("-inf"), tl.float32)
        for start in range(0, n_genes, BLOCK):
            x = tl.load(out_ptr + base + start + columns, mask=start + columns < n_genes, other=float("-inf"))
            largest = tl.maximum(largest, x.to(tl.float32))
        row_max = tl.max(largest, 0)
        exp_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_genes, BLOCK):
            x = tl.load(out_ptr + base + start + columns, mask=start + columns < n_genes, other=float("-inf"))
            exp_sum += tl.exp(x.to(tl.float32) - row_max)
        log_norm = row_max + tl.log(tl.sum(exp_sum, 0))
        log_library = tl.load(log_library_ptr + row)
        value_sum = tl.zeros([BLOCK], tl.float32)
        slope_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_genes, BLOCK):
            mask = start + columns < n_genes
            x = tl.load(out_ptr + base + start + columns, mask=mask, other=0.0).to(tl.float32)
            log_theta = tl.load(log_theta_ptr + start + columns, mask=mask, other=0.0).to(tl.float32)
            zero_logit = x
            if ZINB:
                zero_logit = tl.load(zero_logits_ptr + base + start + columns, mask=mask, other=0.0).to(tl.float32)
            value, by_log_mu, _, _ = _terms(x, log_norm, log_library, log_theta, zero_logit, ZINB)
            value_sum += tl.where(mask, value, 0.0)
            slope_sum += tl.where(mask, by_log_mu, 0.0)
        tl.store(sums_ptr + row, tl.sum(value_sum, 0))
        tl.store(log_norm_ptr + row, log_norm)
        tl.store(slope_sums_ptr + row, tl.sum(slope_sum, 0))

    @triton.jit
    def _backward(out_ptr, zero_logits_ptr, log_library_ptr, log_theta_ptr, log_norm_ptr, slope_sums_ptr,
                  grad_sums_ptr, grad_log_norm_ptr, grad_out_ptr, grad_zero_logits_ptr, theta_partials_ptr,
                  n_rows, n_genes, width, ZINB: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLUMNS: tl.constexpr):
        row_block = tl.program_id(0)
        rows = row_block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        columns = tl.program_id(1) * BLOCK_COLUMNS + tl.arange(0, BLOCK_COLUMNS)
        row_mask = rows < n_rows
        gene = row_mask[:, None] & (columns < n_genes)[None, :]
        stored = row_mask[:, None] & (columns < width)[None, :]  # padding columns get a zero gradient
        offsets = rows.to(tl.int64)[:, None] * width + columns[None, :]
        x = tl.load(out_ptr + offsets, mask=gene, other=0.0).to(tl.float32)
        log_norm = tl.load(log_norm_ptr + rows, mask=row_mask, other=0.0)[:, None]
        log_library = tl.load(log_library_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)[:, None]
        slope_sum = tl.load(slope_sums_ptr + rows, mask=row_mask, other=0.0)[:, None]
        grad = tl.load(grad_sums_ptr + rows, mask=row_mask, other=0.0)[:, None]
        grad_log_norm = tl.load(grad_log_norm_ptr + rows, mask=row_mask, other=0.0)[:, None]
        log_theta = tl.load(log_theta_ptr + columns, mask=columns < n_genes, other=0.0).to(tl.float32)[None, :]
        zero_logit = x
        if ZINB:
            zero_logit = tl.load(zero_logits_ptr + offsets, mask=gene, other=0.0).to(tl.float32)
        _, by_log_mu, by_log_theta, by_zero_logit = _terms(x, log_norm, log_library, log_theta, zero_logit, ZINB)
        softmax = tl.exp(x - log_norm)
        grad_out = tl.where(gene, grad * (by_log_mu - softmax * slope_sum) + grad_log_norm * softmax, 0.0)
        tl.store(grad_out_ptr + offsets, grad_out.to(grad_out_ptr.dtype.element_ty), mask=stored)
        if ZINB:
            grad_zero_logit = tl.where(gene, grad * by_zero_logit, 0.0)
            tl.store(grad_zero_logits_ptr + offsets, grad_zero_logit.to(grad_zero_logits_ptr.dtype.element_ty),
                     mask=stored)
        theta_partial = tl.sum(tl.where(gene, grad * by_log_theta, 0.0), 0)
        tl.store(theta_partials_ptr + row_block.to(tl.int64) * n_genes + columns, theta_partial,
                 mask=columns < n_genes)

    @triton.jit
    def _add_at_entries(dense_ptr, entries_ptr, values_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = i < n
        index = tl.load(entries_ptr + i, mask=mask, other=0)
        total = tl.load(dense_ptr + index, mask=mask).to(tl.float32)
        total += tl.load(values_ptr + i, mask=mask).to(tl.float32)
        tl.store(dense_ptr + index, total.to(dense_ptr.dtype.element_ty), mask=mask)
