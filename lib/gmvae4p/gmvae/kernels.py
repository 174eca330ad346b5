"""The nb/zinb log-likelihood of a batch, and the gathering of the batch's rows, as Triton kernels, for CUDA.

Per cell, the likelihood is what every gene contributes at a zero count (cells × genes, several transcendental
functions each) plus what each non-zero entry adds (:mod:`.distributions`). Left to ``torch.compile``, the first took
four or five fused kernels passing float32 intermediates through memory, and the second a dozen: gathers at the
entries, prefix sums for the per-cell sums and their backward, a copy of the decoder output to add its bias. Here:

- forward, one program per cell: the decoder outputs plus their bias, their log-sum-exp and the zero-count terms;
  then one kernel over the entries (gain added to its cell's sum, derivatives kept per entry for the backward);
- backward, the dense gradients by the decoder outputs and zero logits in their own dtype (and per block of cells the
  column sums for log θ), then one kernel over the entries that writes theirs over those.

The gathering (:func:`gather_rows`) is one pass over a batch's entries, where the torch code made about a dozen
(timings in ``BENCHMARKS.md``).

The arithmetic is that of :mod:`.distributions` (checked against it in the tests, on the GPU and in Triton's CPU
interpreter), with lgamma and digamma written out here: the CUDA library's lgamma has no CPU interpreter version and
there is no digamma at all.

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

# Launch settings: the fastest of those bench/bench_kernels.py tried (BENCHMARKS.md, GMVAE training, the Triton
# likelihood).
FORWARD_BLOCK, FORWARD_WARPS = 1024, 8
ENTRY_FORWARD_BLOCK, ENTRY_FORWARD_WARPS = 128, 4
ENTRY_BACKWARD_BLOCK, ENTRY_BACKWARD_WARPS = 256, 8
BACKWARD_ROWS, BACKWARD_COLUMNS, BACKWARD_WARPS = 16, 128, 8
GATHER_BLOCK, GATHER_WARPS = 1024, 4


def gather_rows(indptr, indices, data, rows, offsets, n_entries, n_genes):
    """``(entry row, column, value)`` of the ``n_entries`` entries of matrix ``rows`` of the CSR
    ``(indptr, indices, data)``, batch row r's at ``offsets[r]:offsets[r + 1]`` (``n_entries`` is ``offsets[-1]``,
    given so that nothing waits for the device). A row −1 is the sink of a fixed-shape batch: its entries are zeros
    in columns cycling through the ``n_genes`` genes, as in :func:`.batches._select_rows`."""
    entry_row = torch.empty(n_entries, dtype=torch.int64, device=rows.device)
    columns, values = torch.empty_like(entry_row), torch.empty(n_entries, dtype=data.dtype, device=rows.device)
    if n_entries:
        _gather_rows[(triton.cdiv(n_entries, GATHER_BLOCK),)](
            indptr, indices, data, rows, offsets, entry_row, columns, values, len(rows), n_entries, n_genes,
            SEARCH_STEPS=max(1, (len(rows) - 1).bit_length()), BLOCK=GATHER_BLOCK, num_warps=GATHER_WARPS)
    return entry_row, columns, values


def count_forward(out, zero_logits, bias, zero_bias, log_library, log_theta, rows, columns, values):
    """Per cell (float32): the log-likelihood, the log-sum-exp of ``out + bias`` over the first ``len(log_theta)``
    columns, and the sum of the log-likelihood's derivatives by log μ; per entry, its gain's derivatives by log μ,
    log θ and (zinb) the zero logit, as rows of one float32 tensor. ``log_library``: (cells, 1); the entries are
    ``rows``, ``columns`` and ``values``, sorted by row."""
    return ops().count_forward(out, zero_logits, bias, zero_bias, log_library, log_theta, rows, columns, values)


def count_backward(out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm, slope_sums, entry_grads,
                   rows, columns, grad_sums):
    """Gradients by ``out`` and ``zero_logits`` (their dtype, zero in padding columns), by ``bias`` and ``zero_bias``
    (float32, zero in padding columns) and by ``log_theta`` (float32), given the forward's results, the entries' rows
    and columns and the gradient of the per-cell sums."""
    grad_out, grad_zero_logits, grad_log_theta = ops().count_backward(
        out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm, slope_sums, entry_grads, rows, columns,
        grad_sums)
    # a bias's gradient is the column sum of its output's (in float32, of the rounded values, as for a matrix
    # product's bias), taken here: partial sums inside the dense kernel made it more than twice as slow
    if zero_logits is None:
        grad_zero_logits = grad_zero_bias = None
    else:
        grad_zero_bias = grad_zero_logits.sum(0, dtype=torch.float32)
    return grad_out, grad_zero_logits, grad_out.sum(0, dtype=torch.float32), grad_zero_bias, grad_log_theta


def _dense_arguments(out, zero_logits, bias, zero_bias, log_library, log_theta) -> tuple:
    """The kernels' leading arguments; for nb, ``out`` and ``bias`` stand in for the zero logits and their bias,
    which the kernels do not read then (a pointer argument cannot be None)."""
    if zero_logits is None:
        zero_logits, zero_bias = out, bias
    return out, zero_logits, bias, zero_bias, log_library, log_theta


_ops = None


def ops():
    """``torch.ops.gmvae4p`` with the two likelihood ops, registered on first use: ``torch.library.triton_op`` imports
    ``torch._inductor`` (about a second per process), which processes that never run the likelihood on CUDA (the
    notebooks, the CPU fold workers) need not pay. :func:`.train.train` calls it before ``torch.compile`` traces."""
    global _ops
    if _ops is None:
        _register_ops()
        _ops = torch.ops.gmvae4p
    return _ops


def _register_ops() -> None:
    """Custom ops, so that torch.compile sees the kernels as functions of their inputs (their outputs are made here)."""
    @torch.library.triton_op("gmvae4p::count_forward", mutates_args=())
    def _count_forward(out: torch.Tensor, zero_logits: torch.Tensor | None, bias: torch.Tensor,
                       zero_bias: torch.Tensor | None, log_library: torch.Tensor, log_theta: torch.Tensor,
                       rows: torch.Tensor, columns: torch.Tensor,
                       values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n_rows, width = out.shape
        sums, log_norm, slope_sums = (torch.empty(n_rows, device=out.device, dtype=torch.float32) for _ in range(3))
        zinb = zero_logits is not None
        entry_grads = torch.empty(3 if zinb else 2, len(values), device=out.device, dtype=torch.float32)
        dense = _dense_arguments(out, zero_logits, bias, zero_bias, log_library, log_theta)
        torch.library.wrap_triton(_forward)[(n_rows,)](*dense, sums, log_norm, slope_sums, len(log_theta), width,
                                                       ZINB=zinb, BLOCK=FORWARD_BLOCK, num_warps=FORWARD_WARPS)
        # The entries in blocks of their own, not one program per cell: a fixed-shape batch's sink row holds
        # every padding entry (5 % of them), and its one program was the kernel's whole last millisecond.
        if len(values):
            torch.library.wrap_triton(_entries_forward)[(triton.cdiv(len(values), ENTRY_FORWARD_BLOCK),)](
                *dense, log_norm, rows, columns, values, sums, slope_sums, entry_grads, width, len(values),
                ZINB=zinb, BLOCK=ENTRY_FORWARD_BLOCK, num_warps=ENTRY_FORWARD_WARPS)
        return sums, log_norm, slope_sums, entry_grads

    @torch.library.triton_op("gmvae4p::count_backward", mutates_args=())
    def _count_backward(out: torch.Tensor, zero_logits: torch.Tensor | None, bias: torch.Tensor,
                        zero_bias: torch.Tensor | None, log_library: torch.Tensor, log_theta: torch.Tensor,
                        log_norm: torch.Tensor, slope_sums: torch.Tensor, entry_grads: torch.Tensor,
                        rows: torch.Tensor, columns: torch.Tensor,
                        grad_sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gradient by ``out``, by ``zero_logits`` (empty for nb), by log θ)."""
        n_rows, width = out.shape
        n_genes = len(log_theta)
        zinb = zero_logits is not None
        grad_out = torch.empty_like(out)
        grad_zero_logits = torch.empty_like(zero_logits) if zinb else out.new_empty(0)
        row_blocks = triton.cdiv(n_rows, BACKWARD_ROWS)
        theta_partials = torch.empty(row_blocks, n_genes, device=out.device, dtype=torch.float32)
        grad_sums = grad_sums.float().contiguous()
        dense = (*_dense_arguments(out, zero_logits, bias, zero_bias, log_library, log_theta), log_norm, slope_sums)
        torch.library.wrap_triton(_backward)[(row_blocks, triton.cdiv(width, BACKWARD_COLUMNS))](
            *dense, grad_sums, grad_out, grad_zero_logits if zinb else grad_out, theta_partials, n_rows, n_genes,
            width, ZINB=zinb, BLOCK_ROWS=BACKWARD_ROWS, BLOCK_COLUMNS=BACKWARD_COLUMNS, num_warps=BACKWARD_WARPS)
        grad_log_theta = theta_partials.sum(0)  # the entries' shares are added to it in place
        n_entries = len(columns)
        if n_entries:
            torch.library.wrap_triton(_entries_backward)[(triton.cdiv(n_entries, ENTRY_BACKWARD_BLOCK),)](
                *dense, entry_grads, rows, columns, grad_sums, grad_out, grad_zero_logits if zinb else grad_out,
                grad_log_theta, n_entries, width, ZINB=zinb, BLOCK=ENTRY_BACKWARD_BLOCK,
                num_warps=ENTRY_BACKWARD_WARPS)
        return grad_out, grad_zero_logits, grad_log_theta


if AVAILABLE:
    @triton.jit
    def _softplus_and_sigmoid(x):
        """As :func:`.distributions.softplus_and_sigmoid`: one exp(−|x|) for both."""
        e = tl.exp(-tl.abs(x))
        return tl.maximum(x, 0.0) + tl.log(1.0 + e), tl.where(x >= 0, 1.0, e) / (1.0 + e)

    @triton.jit
    def _shifted(x):
        """For x > 0: where x < 6, and x moved up by 6 there (the recurrences of lgamma and digamma bring it there),
        with 1/y and 1/y² of the moved value y, for the asymptotic series."""
        small = x < 6.0
        y = tl.where(small, x + 6.0, x)
        inverse = 1.0 / y
        return small, y, inverse, inverse * inverse

    @triton.jit
    def _lgamma(x):
        """log Γ(x) for x > 0: Stirling's series at x + 6 where x < 6, less the log of the recurrence's product."""
        small, y, inverse, inverse_squared = _shifted(x)
        series = inverse * (1.0 / 12.0 - inverse_squared * (1.0 / 360.0 - inverse_squared / 1260.0))
        stirling = (y - 0.5) * tl.log(y) - y + 0.91893853320467274 + series
        product = x * (x + 1.0) * (x + 2.0) * (x + 3.0) * (x + 4.0) * (x + 5.0)
        return stirling - tl.where(small, tl.log(tl.where(small, product, 1.0)), 0.0)

    @triton.jit
    def _digamma(x):
        """ψ(x) for x > 0: the asymptotic series at x + 6 where x < 6, less the recurrence's 1/(x + k)."""
        small, y, inverse, inverse_squared = _shifted(x)
        series = tl.log(y) - 0.5 * inverse - inverse_squared * (
            1.0 / 12.0 - inverse_squared * (1.0 / 120.0 - inverse_squared / 252.0))
        shift = 1.0 / x + 1.0 / (x + 1.0) + 1.0 / (x + 2.0) + 1.0 / (x + 3.0) + 1.0 / (x + 4.0) + 1.0 / (x + 5.0)
        return series - tl.where(small, shift, 0.0)

    @triton.jit
    def _zero_terms(x, log_norm, log_library, log_theta, zero_logit, ZINB: tl.constexpr):
        """Zero-count term and its derivatives by log μ, log θ and (zinb) the zero logit, for decoder outputs ``x``
        (:func:`.distributions.log_nb_zero_and_grads`, :func:`.distributions.log_zinb_zero_and_grads`)."""
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
    def _gain_terms(count, log_mu, log_theta, zero_logit, ZINB: tl.constexpr):
        """A non-zero count's gain over a zero one and its derivatives by log μ, log θ and (zinb) the zero logit
        (:func:`.distributions.log_nb_gain_and_grads`, :func:`.distributions.log_zinb_gain_and_grads`)."""
        theta = tl.exp(log_theta)
        softplus_theta, sigmoid_theta = _softplus_and_sigmoid(log_theta - log_mu)
        value = -count * softplus_theta + _lgamma(count + theta) - _lgamma(theta) - _lgamma(count + 1.0)
        by_log_mu = count * sigmoid_theta
        by_log_theta = theta * (_digamma(count + theta) - _digamma(theta)) - by_log_mu
        by_zero_logit = 0.0 * count
        if ZINB:
            softplus_mu, sigmoid_mu = _softplus_and_sigmoid(log_mu - log_theta)
            nb_zero = -theta * softplus_mu
            nb_zero_by_log_mu = -theta * sigmoid_mu
            softplus_kept, kept = _softplus_and_sigmoid(zero_logit - nb_zero)
            value = value - softplus_kept
            by_log_mu = by_log_mu + kept * nb_zero_by_log_mu
            by_log_theta = by_log_theta + kept * (nb_zero - nb_zero_by_log_mu)
            by_zero_logit = -kept
        return value, by_log_mu, by_log_theta, by_zero_logit

    @triton.jit
    def _forward(out_ptr, zero_logits_ptr, bias_ptr, zero_bias_ptr, log_library_ptr, log_theta_ptr, sums_ptr,
                 log_norm_ptr, slope_sums_ptr, n_genes, width, ZINB: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        base = row.to(tl.int64) * width
        columns = tl.arange(0, BLOCK)
        # three passes over the row (the later ones mostly from L2): its maximum, its sum of exponentials, the terms
        largest = tl.full([BLOCK], float("-inf"), tl.float32)
        for start in range(0, n_genes, BLOCK):
            mask = start + columns < n_genes
            x = tl.load(out_ptr + base + start + columns, mask=mask, other=float("-inf")).to(tl.float32)
            largest = tl.maximum(largest, x + tl.load(bias_ptr + start + columns, mask=mask, other=0.0))
        row_max = tl.max(largest, 0)
        exp_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_genes, BLOCK):
            mask = start + columns < n_genes
            x = tl.load(out_ptr + base + start + columns, mask=mask, other=float("-inf")).to(tl.float32)
            exp_sum += tl.exp(x + tl.load(bias_ptr + start + columns, mask=mask, other=0.0) - row_max)
        log_norm = row_max + tl.log(tl.sum(exp_sum, 0))
        log_library = tl.load(log_library_ptr + row)
        value_sum = tl.zeros([BLOCK], tl.float32)
        slope_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_genes, BLOCK):
            mask = start + columns < n_genes
            x = tl.load(out_ptr + base + start + columns, mask=mask, other=0.0).to(tl.float32)
            x += tl.load(bias_ptr + start + columns, mask=mask, other=0.0)
            log_theta = tl.load(log_theta_ptr + start + columns, mask=mask, other=0.0).to(tl.float32)
            zero_logit = x
            if ZINB:
                zero_logit = tl.load(zero_logits_ptr + base + start + columns, mask=mask, other=0.0).to(tl.float32)
                zero_logit += tl.load(zero_bias_ptr + start + columns, mask=mask, other=0.0)
            value, by_log_mu, _, _ = _zero_terms(x, log_norm, log_library, log_theta, zero_logit, ZINB)
            value_sum += tl.where(mask, value, 0.0)
            slope_sum += tl.where(mask, by_log_mu, 0.0)
        tl.store(sums_ptr + row, tl.sum(value_sum, 0))
        tl.store(log_norm_ptr + row, log_norm)
        tl.store(slope_sums_ptr + row, tl.sum(slope_sum, 0))

    @triton.jit
    def _entries_forward(out_ptr, zero_logits_ptr, bias_ptr, zero_bias_ptr, log_library_ptr, log_theta_ptr,
                         log_norm_ptr, rows_ptr, columns_ptr, values_ptr, sums_ptr, slope_sums_ptr, entry_grads_ptr,
                         width, n_entries, ZINB: tl.constexpr, BLOCK: tl.constexpr):
        start = tl.program_id(0) * BLOCK
        index = start + tl.arange(0, BLOCK)
        mask = index < n_entries
        row = tl.load(rows_ptr + index, mask=mask, other=0)
        column = tl.load(columns_ptr + index, mask=mask, other=0)
        count = tl.load(values_ptr + index, mask=mask, other=0.0).to(tl.float32)
        position = row.to(tl.int64) * width + column
        x = tl.load(out_ptr + position, mask=mask, other=0.0).to(tl.float32)
        x += tl.load(bias_ptr + column, mask=mask, other=0.0)
        log_mu = x - tl.load(log_norm_ptr + row, mask=mask, other=0.0)
        log_mu += tl.load(log_library_ptr + row, mask=mask, other=0.0).to(tl.float32)
        log_theta = tl.load(log_theta_ptr + column, mask=mask, other=0.0).to(tl.float32)
        zero_logit = x
        if ZINB:
            zero_logit = tl.load(zero_logits_ptr + position, mask=mask, other=0.0).to(tl.float32)
            zero_logit += tl.load(zero_bias_ptr + column, mask=mask, other=0.0)
        value, by_log_mu, by_log_theta, by_zero_logit = _gain_terms(count, log_mu, log_theta, zero_logit, ZINB)
        tl.store(entry_grads_ptr + index, by_log_mu, mask=mask)
        tl.store(entry_grads_ptr + n_entries + index, by_log_theta, mask=mask)
        if ZINB:
            tl.store(entry_grads_ptr + 2 * n_entries + index, by_zero_logit, mask=mask)
        # Entries come sorted by cell, so a block spans a few cells: each one's share is added to the sums of the
        # dense kernel, one atomic addition per cell and block.
        value = tl.where(mask, value, 0.0)
        by_log_mu = tl.where(mask, by_log_mu, 0.0)
        first_row = tl.load(rows_ptr + start)
        last_row = tl.load(rows_ptr + tl.minimum(start + BLOCK, n_entries) - 1)
        for cell in range(first_row, last_row + 1):
            in_cell = row == cell
            tl.atomic_add(sums_ptr + cell, tl.sum(tl.where(in_cell, value, 0.0), 0), sem="relaxed")
            tl.atomic_add(slope_sums_ptr + cell, tl.sum(tl.where(in_cell, by_log_mu, 0.0), 0), sem="relaxed")

    @triton.jit
    def _backward(out_ptr, zero_logits_ptr, bias_ptr, zero_bias_ptr, log_library_ptr, log_theta_ptr, log_norm_ptr,
                  slope_sums_ptr, grad_sums_ptr, grad_out_ptr, grad_zero_logits_ptr, theta_partials_ptr, n_rows,
                  n_genes, width, ZINB: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLUMNS: tl.constexpr):
        row_block = tl.program_id(0)
        rows = row_block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        columns = tl.program_id(1) * BLOCK_COLUMNS + tl.arange(0, BLOCK_COLUMNS)
        row_mask = rows < n_rows
        genes = columns < n_genes
        gene = row_mask[:, None] & genes[None, :]
        stored = row_mask[:, None] & (columns < width)[None, :]  # padding columns get a zero gradient
        offsets = rows.to(tl.int64)[:, None] * width + columns[None, :]
        x = tl.load(out_ptr + offsets, mask=gene, other=0.0).to(tl.float32)
        x += tl.load(bias_ptr + columns, mask=genes, other=0.0)[None, :]
        log_norm = tl.load(log_norm_ptr + rows, mask=row_mask, other=0.0)[:, None]
        log_library = tl.load(log_library_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)[:, None]
        slope_sum = tl.load(slope_sums_ptr + rows, mask=row_mask, other=0.0)[:, None]
        grad = tl.load(grad_sums_ptr + rows, mask=row_mask, other=0.0)[:, None]
        log_theta = tl.load(log_theta_ptr + columns, mask=genes, other=0.0).to(tl.float32)[None, :]
        zero_logit = x
        if ZINB:
            zero_logit = tl.load(zero_logits_ptr + offsets, mask=gene, other=0.0).to(tl.float32)
            zero_logit += tl.load(zero_bias_ptr + columns, mask=genes, other=0.0)[None, :]
        _, by_log_mu, by_log_theta, by_zero_logit = _zero_terms(x, log_norm, log_library, log_theta, zero_logit, ZINB)
        grad_out = tl.where(gene, grad * (by_log_mu - tl.exp(x - log_norm) * slope_sum), 0.0)
        tl.store(grad_out_ptr + offsets, grad_out.to(grad_out_ptr.dtype.element_ty), mask=stored)
        if ZINB:
            grad_zero_logit = tl.where(gene, grad * by_zero_logit, 0.0)
            tl.store(grad_zero_logits_ptr + offsets, grad_zero_logit.to(grad_zero_logits_ptr.dtype.element_ty),
                     mask=stored)
        theta_partial = tl.sum(tl.where(gene, grad * by_log_theta, 0.0), 0)
        tl.store(theta_partials_ptr + row_block.to(tl.int64) * n_genes + columns, theta_partial, mask=genes)

    @triton.jit
    def _entries_backward(out_ptr, zero_logits_ptr, bias_ptr, zero_bias_ptr, log_library_ptr, log_theta_ptr,
                          log_norm_ptr, slope_sums_ptr, entry_grads_ptr, rows_ptr, columns_ptr, grad_sums_ptr,
                          grad_out_ptr, grad_zero_logits_ptr, grad_log_theta_ptr, n_entries, width,
                          ZINB: tl.constexpr, BLOCK: tl.constexpr):
        # At an entry the zero-count part and the gain's part of a gradient can be large and cancel: the zero-count
        # part is recomputed here and the sum stored, rounded once to the gradient's dtype (adding to the rounded
        # value the dense kernel stored there lost all digits of such sums). Value-0 padding entries may repeat a
        # cell and column: they store the same value twice. log θ's gradient takes the gains' parts atomically.
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = index < n_entries
        row = tl.load(rows_ptr + index, mask=mask, other=0)
        column = tl.load(columns_ptr + index, mask=mask, other=0)
        grad = tl.load(grad_sums_ptr + row, mask=mask, other=0.0)
        position = row.to(tl.int64) * width + column
        x = tl.load(out_ptr + position, mask=mask, other=0.0).to(tl.float32)
        x += tl.load(bias_ptr + column, mask=mask, other=0.0)
        log_norm = tl.load(log_norm_ptr + row, mask=mask, other=0.0)
        log_theta = tl.load(log_theta_ptr + column, mask=mask, other=0.0).to(tl.float32)
        log_library = tl.load(log_library_ptr + row, mask=mask, other=0.0).to(tl.float32)
        zero_logit = x
        if ZINB:
            zero_logit = tl.load(zero_logits_ptr + position, mask=mask, other=0.0).to(tl.float32)
            zero_logit += tl.load(zero_bias_ptr + column, mask=mask, other=0.0)
        _, by_log_mu, _, by_zero_logit = _zero_terms(x, log_norm, log_library, log_theta, zero_logit, ZINB)
        slope_sum = tl.load(slope_sums_ptr + row, mask=mask, other=0.0)
        gain_by_log_mu = grad * tl.load(entry_grads_ptr + index, mask=mask, other=0.0)
        total = grad * (by_log_mu - tl.exp(x - log_norm) * slope_sum) + gain_by_log_mu
        tl.store(grad_out_ptr + position, total.to(grad_out_ptr.dtype.element_ty), mask=mask)
        gain_by_log_theta = grad * tl.load(entry_grads_ptr + n_entries + index, mask=mask, other=0.0)
        tl.atomic_add(grad_log_theta_ptr + column, gain_by_log_theta, mask=mask, sem="relaxed")
        if ZINB:
            gain_by_zero_logit = grad * tl.load(entry_grads_ptr + 2 * n_entries + index, mask=mask, other=0.0)
            total = grad * by_zero_logit + gain_by_zero_logit
            tl.store(grad_zero_logits_ptr + position, total.to(grad_zero_logits_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gather_rows(indptr, indices, data, rows, offsets, entry_row, columns, values, n_rows, n_entries, n_genes,
                     SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr):
        entries = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = entries < n_entries
        # each entry's batch row: the last r with offsets[r] <= entry (empty rows share their successor's offset),
        # by bisection, keeping offsets[low] <= entry < offsets[high] (row ends marked and prefix-summed in torch
        # instead made epochs no faster)
        low = tl.zeros([BLOCK], dtype=tl.int32)
        high = tl.full([BLOCK], n_rows, dtype=tl.int32)
        for _ in tl.static_range(SEARCH_STEPS):
            middle = (low + high) // 2
            before = tl.load(offsets + middle, mask=inside, other=0) <= entries
            low = tl.where(before, middle, low)
            high = tl.where(before, high, middle)
        rank = entries - tl.load(offsets + low, mask=inside, other=0)  # the entry's place in its row
        matrix_row = tl.load(rows + low, mask=inside, other=-1)
        real = inside & (matrix_row >= 0)
        position = tl.load(indptr + tl.maximum(matrix_row, 0), mask=real, other=0) + rank
        column = tl.load(indices + position, mask=real, other=0).to(tl.int64)
        tl.store(entry_row + entries, low.to(tl.int64), mask=inside)
        tl.store(columns + entries, tl.where(real, column, rank % n_genes), mask=inside)
        tl.store(values + entries, tl.load(data + position, mask=real, other=0.0), mask=inside)
