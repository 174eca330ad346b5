import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from gmvae4p.gmvae.batches import _select_rows
from gmvae4p.gmvae.distributions import log_gaussian_unit, log_nb, log_zinb
from gmvae4p.gmvae.module import UNLABELED, GMVAEModule, SparseCounts, count_log_likelihood

G, K, B = 50, 4, 16


def _counts(seed=0):
    return torch.poisson(torch.rand(B, G, generator=torch.Generator().manual_seed(seed)) * 5)


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
@pytest.mark.parametrize("labels", [None, "all", "some"])
def test_loss_terms_are_finite_scalars_and_every_parameter_gets_a_gradient(likelihood, labels):
    torch.manual_seed(0)
    module = GMVAEModule(G, K, latent_dim=8, hidden_dims=(32, 16), likelihood=likelihood)
    y = {None: None, "all": torch.arange(B) % K, "some": torch.where(torch.arange(B) % 2 == 0, torch.arange(B) % K,
                                                                      UNLABELED)}[labels]
    out = module(_counts(), y)
    for term in ("loss", "recon", "kl", "ce"):
        assert out[term].dim() == 0 and torch.isfinite(out[term])
    assert out["logits_y"].shape == (B, K)
    out["loss"].backward()
    unused = {"prior.logits"} if labels == "all" else set()  # KL(q(y) ‖ π) only concerns unlabelled cells
    for name, p in module.named_parameters():
        if name not in unused:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert (out["ce"] > 0) == (labels is not None)


def test_decoder_runs_once_per_cell_whatever_k():
    module = GMVAEModule(G, 12, latent_dim=8, hidden_dims=(32, 16), likelihood="nb")
    rows = []
    module.decoder.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    module(_counts())
    assert rows == [B]


def test_kl_to_components_matches_torch_distributions():
    torch.manual_seed(1)
    module = GMVAEModule(G, K, latent_dim=6, hidden_dims=(16,), likelihood="mse")
    with torch.no_grad():
        module.prior.log_var.normal_()
    mean, log_var = torch.randn(B, 6), torch.randn(B, 6)
    ours = module.prior.kl(mean, log_var)
    q = Normal(mean[:, None, :], (0.5 * log_var).exp()[:, None, :])
    p = Normal(module.prior.mean[None], (0.5 * module.prior.log_var).exp()[None])
    torch.testing.assert_close(ours, kl_divergence(q, p).sum(-1))


def test_labelled_kl_uses_the_true_component_and_unlabelled_the_weighted_sum():
    torch.manual_seed(2)
    module = GMVAEModule(G, K, latent_dim=4, hidden_dims=(16,), likelihood="mse").eval()
    x, y = _counts(), torch.arange(B) % K
    logits, mean, log_var = module.encode(x)
    kl_all = module.prior.kl(mean, log_var)
    labelled = module(x, y, kl_weight=1.0, ce_weight=0.0)
    recon = labelled["recon"]
    torch.testing.assert_close(labelled["kl"], kl_all[torch.arange(B), y].mean())
    q = logits.softmax(-1)
    expected = ((q * kl_all).sum(-1) + (q * (q.log() - torch.full((K,), 1 / K).log())).sum(-1)).mean()
    torch.testing.assert_close(module(x)["kl"], expected)
    torch.testing.assert_close(module(x)["recon"], recon)


def test_zscore_is_zero_at_the_component_mean_and_scaled_by_its_sd():
    module = GMVAEModule(G, K, latent_dim=3, hidden_dims=(8,))
    with torch.no_grad():
        module.prior.log_var[1] = np.log(4.0)
    component = torch.tensor([0, 1])
    z = torch.stack([module.prior.mean[0], module.prior.mean[1] + 2.0]).detach()
    torch.testing.assert_close(module.zscore(z, component), torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        GMVAEModule(G, K, likelihood="poisson")
    with pytest.raises(ValueError, match="n_components must be at least 2"):
        GMVAEModule(G, 1)


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
def test_sparse_likelihood_equals_the_dense_elementwise_sum(likelihood):
    """Zero-count sums over all genes plus the non-zero entries' gain = the textbook sum over every entry, in value
    and in every parameter's gradient."""
    torch.manual_seed(3)
    module = GMVAEModule(G, K, latent_dim=4, hidden_dims=(16,), likelihood=likelihood).double().eval()
    x = _counts().double()
    x[2] = 0  # an empty cell
    library = x.sum(-1, keepdim=True).clamp_min(1.0)
    x_log1p = torch.log1p(x * module.target_sum / library)
    assert module.width % 64 == 0 and module.width >= G  # gene-wide layers padded to rows of 128 bytes in bf16
    _, z_mean, _ = module._encode(torch.nn.functional.pad(x_log1p, (0, module.width - G)))
    hidden = module.decoder(z_mean)
    out = module.head_x(hidden)[:, :G]
    log_mu = torch.log_softmax(out, -1) + library.log()
    expected = {"mse": lambda: log_gaussian_unit(x_log1p, out),
                "nb": lambda: log_nb(x, log_mu, module.log_theta),
                "zinb": lambda: log_zinb(x, log_mu, module.log_theta, module.head_zero(hidden)[:, :G])}[likelihood]()
    recon, textbook = module(x)["recon"], -expected.sum(-1).mean()
    torch.testing.assert_close(recon, textbook)
    parameters = [p for p in module.parameters() if p.requires_grad]
    for ours, reference in zip(torch.autograd.grad(recon, parameters, allow_unused=True),
                               torch.autograd.grad(textbook, parameters, allow_unused=True)):
        torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("likelihood", ["nb", "zinb"])
def test_count_likelihood_backward_matches_finite_differences(likelihood):
    """The hand-written backward, through the padding columns, the biases, the softmax normaliser, the library size
    and the non-zero entries (an empty cell among them)."""
    torch.manual_seed(4)
    cells, genes, width = 5, 13, 16
    dense = torch.zeros(cells, genes, dtype=torch.float64)
    dense.view(-1)[torch.tensor([0, 3, 14, 15, 40, 64])] = torch.tensor([1, 7, 2, 1, 30, 3], dtype=torch.float64)
    counts = SparseCounts.from_dense(dense)
    assert not (counts.row == 2).any()  # cell 2 is empty
    zinb = likelihood == "zinb"
    out, bias = torch.randn(cells, width, dtype=torch.float64), torch.randn(width, dtype=torch.float64)
    zero_logits = torch.randn(cells, width, dtype=torch.float64) if zinb else None
    zero_bias = torch.randn(width, dtype=torch.float64) if zinb else None
    log_library = 3 * torch.rand(cells, 1, dtype=torch.float64)
    log_theta = torch.randn(genes, dtype=torch.float64)
    inputs = [None if t is None else t.requires_grad_() for t in (out, zero_logits, bias, zero_bias, log_library,
                                                                   log_theta)]
    assert torch.autograd.gradcheck(lambda *args: count_log_likelihood(*args, counts), inputs)


def test_row_sums_match_a_scatter_add():
    x = _counts()
    x[3] = 0  # a row without entries
    sparse = SparseCounts.from_dense(x)
    values = torch.randn(len(sparse.value), dtype=torch.float64, requires_grad=True)
    ours = sparse.row_sums(values)
    scattered = values.new_zeros(B).index_add(0, sparse.row, values)
    torch.testing.assert_close(ours, scattered)
    weights = torch.randn(B, dtype=torch.float64)
    torch.testing.assert_close(*(torch.autograd.grad((sums * weights).sum(), values)[0] for sums in (ours, scattered)))


def test_sparse_counts_round_trip():
    x = _counts()
    sparse = SparseCounts.from_dense(x)
    assert len(sparse.value) == int((x > 0).sum())
    torch.testing.assert_close(sparse.to_dense(), x)


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
def test_padding_rows_change_no_loss_term_and_no_gradient(likelihood):
    """A fixed-shape batch (empty rows, and a sink row of value-0 entries, masked out) gives the terms and gradients
    of the batch without padding."""
    torch.manual_seed(6)
    module = GMVAEModule(G, K, latent_dim=4, hidden_dims=(16,), likelihood=likelihood).double().eval()
    counts = SparseCounts.from_dense(_counts().double())
    labels = torch.where(torch.arange(B) % 3 == 0, UNLABELED, torch.arange(B) % K)
    padded = _select_rows(counts.offsets, counts.col, counts.value, F.pad(torch.arange(B), (0, 8), value=-1),
                          len(counts.value) + 3 * G, G, sink=True)  # the sink's columns repeat
    mask = torch.arange(B + 8) < B
    plain = module(counts, labels)
    masked = module(padded, F.pad(labels, (0, 8), value=UNLABELED), cell_mask=mask)
    parameters = list(module.parameters())
    for term in ("loss", "recon", "kl", "ce"):
        torch.testing.assert_close(masked[term], plain[term])
    for a, b in zip(torch.autograd.grad(masked["loss"], parameters, allow_unused=True),
                    torch.autograd.grad(plain["loss"], parameters, allow_unused=True)):
        torch.testing.assert_close(a, b)


def test_weights_of_another_padding_are_refused_with_one_clear_error():
    module = GMVAEModule(G, K, latent_dim=4, hidden_dims=(16,))
    state = module.state_dict()
    state["head_x.weight"] = state["head_x.weight"][:G + 3]  # as an earlier version padded the genes
    with pytest.raises(ValueError, match=f"{G + 3} columns wide.*train the GMVAE again"):
        module.load_weights(state, "model.pt")
    module.load_weights(module.state_dict(), "model.pt")
