"""Training on a CUDA GPU (skipped elsewhere; run through the device tool, whose image has torch but not anndata)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch._inductor.config as inductor_config

from gmvae4p.gmvae import train as training
from gmvae4p.gmvae.batches import CSRBatches
from gmvae4p.gmvae.config import TrainConfig
from gmvae4p.gmvae.module import GMVAEModule
from gmvae4p.gmvae.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
N_TYPES = 4


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    types = rng.integers(0, N_TYPES, 3000)
    means = rng.gamma(0.3, 2.0, (N_TYPES, 300))
    return sp.csr_matrix(rng.poisson(means[types]).astype(np.float32)), torch.from_numpy(types).cuda()


@pytest.mark.parametrize("likelihood,compiled", [("mse", True), ("zinb", True), ("zinb", False)])
def test_the_recorded_whole_step_trains_like_the_same_steps_run_one_by_one(counts, monkeypatch, likelihood, compiled):
    """Replaying the recorded step (batch gathering, forward, backward, clipping, AdamW, metric sums), compiled or
    not, gives the losses of running its kernels one by one on the same fixed-shape batches, and every step after a
    recording's warm-up is a replay."""
    matrix, types = counts
    batches = CSRBatches(matrix, device="cuda", placement="resident")
    warmup, calls = training._GraphedStep.WARMUP, {"capture_begin": 0, "replay": 0}

    def counted(method):
        original = getattr(torch.cuda.CUDAGraph, method)

        def call(graph, *args, **kwargs):
            calls[method] += 1
            return original(graph, *args, **kwargs)
        return call

    for method in calls:
        monkeypatch.setattr(torch.cuda.CUDAGraph, method, counted(method))
    histories = {}
    for recorded in (True, False):
        if not recorded:  # the same step, called directly
            monkeypatch.setattr(training, "_GraphedStep", lambda step: lambda key, *inputs: step(*inputs))
        torch.manual_seed(0)
        module = GMVAEModule(matrix.shape[1], N_TYPES, latent_dim=6, hidden_dims=(64,), likelihood=likelihood)
        config = TrainConfig(epochs=3, batch_size=256, compile=compiled, cuda_graphs=True)
        with inductor_config.patch(fallback_random=True):  # the same random numbers with and without the graph
            histories[recorded] = train(module, batches, types, config=config, log=None)
    n_steps = 3 * -(-matrix.shape[0] // 256)
    # one recording, or one more for each epoch whose batches raised the entry bound
    assert calls["capture_begin"] >= 1 and calls["replay"] == n_steps - warmup * calls["capture_begin"]
    for term in ("loss", "recon", "kl", "ce", "acc"):
        np.testing.assert_allclose([h[term] for h in histories[True]], [h[term] for h in histories[False]],
                                   rtol=1e-3, err_msg=term)
    assert histories[True][-1]["loss"] < histories[True][0]["loss"]


def _without_and_with_a_one_process_group(matrix, types, config, folder):
    """The histories of one zinb GMVAE's training without a process group and under an NCCL group of one process
    (each with new batches: the entry bound starts from 0)."""
    import torch.distributed as dist

    histories = []
    for grouped in (False, True):
        if grouped:
            dist.init_process_group("nccl", init_method=f"file://{folder / 'store'}", rank=0, world_size=1,
                                    device_id=torch.device("cuda", torch.cuda.current_device()))
        try:
            torch.manual_seed(0)
            module = GMVAEModule(matrix.shape[1], N_TYPES, latent_dim=6, hidden_dims=(64,), likelihood="zinb")
            batches = CSRBatches(matrix, device="cuda", placement="resident")
            with inductor_config.patch(fallback_random=True):
                histories.append(train(module, batches, types, config=config, log=None))
        finally:
            if grouped:
                dist.destroy_process_group()
    for term in ("loss", "recon", "kl", "ce", "acc"):
        np.testing.assert_allclose([h[term] for h in histories[1]], [h[term] for h in histories[0]], rtol=1e-3,
                                   err_msg=term)


def test_a_one_gpu_process_group_averages_its_gradients_and_trains_with_the_kernels(counts, tmp_path):
    """Under an NCCL process group (here of one process) the step, compiled for varying shapes with the likelihood's
    Triton kernels, has its gradients averaged over the ranks by one all-reduce into the flat buffer
    (``_AveragedGradients``): it gives the losses of the same training without a group (compiled for varying shapes
    too, so that both take the same unpadded batches)."""
    _without_and_with_a_one_process_group(*counts, TrainConfig(epochs=2, batch_size=256, compile=True,
                                                               cuda_graphs=False), tmp_path)


def test_under_a_one_gpu_process_group_the_recorded_step_holds_the_all_reduce(counts, tmp_path, monkeypatch):
    """With resident counts every rank records its whole step, the gradients' all-reduce included: under an NCCL
    group (here of one process) the step is recorded and replayed, and gives the losses of the recorded step without a
    group."""
    import torch.distributed as dist

    captures = []
    original = torch.cuda.CUDAGraph.capture_begin
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin",
                        lambda graph, *args, **kwargs: (captures.append(dist.is_initialized()),
                                                        original(graph, *args, **kwargs))[1])
    _without_and_with_a_one_process_group(*counts, TrainConfig(epochs=2, batch_size=256, compile=False,
                                                               cuda_graphs=True), tmp_path)
    assert False in captures and True in captures
