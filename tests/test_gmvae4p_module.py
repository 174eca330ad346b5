import pytest
import torch

from gmvae4p.classify.module import GMVAE4PModule

DIMS = {"proportions": 4, "states": 12, "communication": 20}


def _batch(n=16, genes=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    modalities = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    modalities["states"][:3, :6] = float("nan")  # a cell type not drawn in three samples
    return torch.randn(n, genes, generator=g), torch.arange(n) % 2, modalities


def test_forward_gives_logits_and_fusion_weights_that_sum_to_one_and_every_parameter_learns():
    torch.manual_seed(0)
    module = GMVAE4PModule(30, DIMS, hidden_dim=32, embed_dim=8)
    bulk, labels, modalities = _batch()
    out = module(bulk)
    assert out["logits"].shape == (16, 2) and out["fusion_weights"].shape == (16, 3)
    torch.testing.assert_close(out["fusion_weights"].sum(-1), torch.ones(16))
    terms = module.loss(out, labels, modalities)
    assert all(torch.isfinite(v) for v in terms.values()) and terms["contrastive"] > 0
    terms["loss"].backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_missing_modality_entries_leave_the_nll_and_scrna_mode_reads_the_true_modalities():
    torch.manual_seed(1)
    module = GMVAE4PModule(30, DIMS, hidden_dim=32, embed_dim=8).eval()
    bulk, labels, modalities = _batch()
    out = module(bulk)
    changed = {m: v.clone() for m, v in modalities.items()}
    changed["states"][:3, :6] = 100.0  # was NaN: known now, and far off
    assert module.loss(out, labels, changed, contrastive_weight=0)["nll"] > \
        module.loss(out, labels, modalities, contrastive_weight=0)["nll"]
    true_mode = module(bulk, modalities, use_true=True)
    assert not torch.allclose(true_mode["logits"], out["logits"])
    torch.testing.assert_close(true_mode["embedding/proportions"],
                               module.encoders["proportions"](modalities["proportions"]))
    with pytest.raises(ValueError, match="use_true=True needs the true modalities"):
        module(bulk, use_true=True)


def test_a_few_steps_fit_a_separable_toy_problem():
    torch.manual_seed(2)
    bulk, labels, modalities = _batch(n=64)
    bulk[:, 0] += 3.0 * labels  # one informative gene
    module = GMVAE4PModule(30, DIMS, hidden_dim=32, embed_dim=8, dropout=0.0)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        module.loss(module(bulk), labels, modalities)["loss"].backward()
        optimizer.step()
    accuracy = (module.eval()(bulk)["logits"].argmax(-1) == labels).float().mean()
    assert accuracy > 0.95


def test_training_reads_both_paths_from_one_bulk_encoding_with_forwards_outputs():
    torch.manual_seed(2)
    module = GMVAE4PModule(30, DIMS, hidden_dim=32, embed_dim=8).eval()  # no dropout: both ways give the same
    bulk, labels, modalities = _batch()
    out, true_out = module.forward_both(bulk, modalities)
    for mine, theirs in ((out, module(bulk)), (true_out, module(bulk, modalities, use_true=True))):
        assert mine.keys() == theirs.keys()
        for key in mine:
            torch.testing.assert_close(mine[key], theirs[key])
    plain = GMVAE4PModule(30, {}, hidden_dim=32, embed_dim=8)
    assert plain.forward_both(bulk, {})[1] is None
