"""The fast GMVAE module computes the reference module's loss and gradients (on CPU: its torch path; the Triton
kernels are held to the same sums in ``test_kernels.py`` on CUDA)."""

import numpy as np
import pytest
import torch

from gmvae4p.gmvae import train as training
from gmvae4p.gmvae.config import ModuleConfig, TrainConfig
from gmvae4p.gmvae.module import GMVAEModule, SparseCounts
from gmvae4p.gmvae.reference import ReferenceGMVAE

N_GENES, N_COMPONENTS = 37, 4  # an odd gene count: the fast module pads its gene-wide layers to 64 columns


def _pair(likelihood: str, seed: int = 0):
    """A fast module with random weights and the reference module with the same weights, both float64."""
    torch.manual_seed(seed)
    settings = dict(latent_dim=5, hidden_dims=(16, 8), dropout=0.0, likelihood=likelihood, target_sum=1e4)
    fast = GMVAEModule(N_GENES, N_COMPONENTS, **settings).double()
    with torch.no_grad():
        for parameter in fast.parameters():  # away from the initial zeros, so that every term is exercised
            parameter.add_(0.3 * torch.randn_like(parameter))
    reference = ReferenceGMVAE(N_GENES, N_COMPONENTS, **settings).double()
    reference.load_state_dict({name: _unpadded(name, value) for name, value in fast.state_dict().items()})
    return fast, reference


def _unpadded(name: str, value: torch.Tensor) -> torch.Tensor:
    """The fast module's gene-wide tensors without their padding (its padded inputs are zero, padded outputs unread)."""
    if name.startswith(("head_x", "head_zero")):
        return value[:N_GENES]
    if name == "encoder.0.weight":
        return value[:, :N_GENES]
    return value


def _batch(seed: int = 1, n_cells: int = 12):
    generator = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.rand(n_cells, N_GENES, generator=generator, dtype=torch.float64) * 3, generator)
    counts[counts < 2] = 0  # sparse, as counts are
    counts[0] = 0  # an empty cell
    labels = torch.tensor([0, 1, 2, 3, -1, -1, 0, 2, -1, 1, 3, -1])[:n_cells]
    return counts, labels


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
def test_fast_and_reference_modules_give_the_same_loss_terms_and_gradients(likelihood):
    fast, reference = _pair(likelihood)
    counts, labels = _batch()
    class_weights = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    mask = torch.ones(len(counts), dtype=torch.bool)
    mask[-2:] = False  # padding rows of a fixed-shape batch
    outputs = []
    for module in (fast, reference):
        module.eval()  # z = E[z|x]: no sampling noise to match
        module.zero_grad()
        out = module(SparseCounts.from_dense(counts), labels, kl_weight=0.7, ce_weight=5.0,
                     class_weights=class_weights, cell_mask=mask)
        out["loss"].backward()
        outputs.append(out)
    for term in ("loss", "recon", "kl", "ce"):
        torch.testing.assert_close(outputs[0][term], outputs[1][term], rtol=1e-10, atol=1e-10, msg=term)
    assert outputs[1]["recon"] > 0 and outputs[1]["kl"] > 0 and outputs[1]["ce"] > 0
    torch.testing.assert_close(outputs[0]["logits_y"], outputs[1]["logits_y"])
    gradients = dict(reference.named_parameters())
    for name, parameter in fast.named_parameters():
        torch.testing.assert_close(_unpadded(name, parameter.grad), gradients[name].grad, rtol=1e-8, atol=1e-10,
                                   msg=name)


def test_the_backend_setting_picks_the_module_and_refuses_compile_with_the_reference():
    config = ModuleConfig(likelihood="zinb", latent_dim=4, hidden_dims=[8])
    assert isinstance(training.build_module(10, 3, config, "reference"), ReferenceGMVAE)
    assert isinstance(training.build_module(10, 3, config), GMVAEModule)
    with pytest.raises(ValueError, match="compile must be false with backend reference"):
        TrainConfig(backend="reference", compile=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        TrainConfig(backend="triton")


def test_training_with_the_reference_backend_lowers_the_loss_as_the_fast_one_does(tmp_path):
    from gmvae4p.gmvae.trainset import write_trainset

    rng = np.random.default_rng(0)
    import scipy.sparse as sp

    types = np.repeat(np.arange(3), 40)
    rates = rng.gamma(1.0, 2.0, size=(3, N_GENES))
    counts = sp.csr_matrix(rng.poisson(rates[types]).astype(np.float32))
    histories = {}
    for backend in ("fast", "reference"):
        folder = tmp_path / backend
        folder.mkdir()
        write_trainset(folder / "trainset.h5", counts, types, component_names=["a", "b", "c"],
                       genes=[f"g{i}" for i in range(N_GENES)], validation=np.zeros(len(types), bool), seed=0)
        training.write_settings(folder, ModuleConfig(likelihood="nb", latent_dim=4, hidden_dims=[16]),
                                TrainConfig(epochs=12, batch_size=16, lr=3e-3, backend=backend), seed=0)
        histories[backend] = training.run(folder / "trainset.h5", folder, device="cpu", log=None)
        state = torch.load(folder / training.MODEL, weights_only=True)
        assert state["train_config"]["backend"] == backend
    for backend, history in histories.items():
        assert history[-1]["loss"] < history[0]["loss"], backend
        assert history[-1]["acc"] > 0.95, backend  # three well-separated types
    np.testing.assert_allclose(histories["fast"][-1]["loss"], histories["reference"][-1]["loss"], rtol=0.05)
