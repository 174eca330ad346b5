import dataclasses
import tempfile
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import scipy.sparse as sp
import torch
import torch._inductor.config as inductor_config
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score

from gmvae4p import params
from gmvae4p.data import load_cohort, simulate_cohort
from gmvae4p.gmvae import launch as launch_module
from gmvae4p.gmvae import train as training
from gmvae4p.gmvae.batches import CSRBatches
from gmvae4p.gmvae.config import ModuleConfig, TrainConfig
from gmvae4p.gmvae.launch import TrainingFailed, launch
from gmvae4p.gmvae.module import GMVAEModule
from gmvae4p.gmvae.train import epoch_line, predict, train
from gmvae4p.gmvae import trainset as trainset_module
from gmvae4p.gmvae.trainset import read_shard, write_trainset
from gmvae4p.preprocess import qc_normalize_hvg

from conftest import ROOT


@pytest.fixture(scope="module")
def cohort():
    return simulate_cohort(n_patients=12, n_cells=3000, n_genes=400, n_marker_genes=15, n_disease_genes=20, seed=5)


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
def test_supervised_gmvae_calls_cell_types_of_held_out_patients(cohort, likelihood):
    patients = cohort.obs["ind_cov"].to_numpy()
    held_out = np.isin(patients, ["P001", "P002", "P003"])
    types = torch.from_numpy(cohort.obs["ct_cov"].cat.codes.to_numpy().astype(np.int64))
    train_batches = CSRBatches(cohort.counts[~held_out])
    test_batches = CSRBatches(cohort.counts[held_out])
    torch.manual_seed(0)
    module = GMVAEModule(cohort.counts.shape[1], 8, latent_dim=10, hidden_dims=(128, 64), likelihood=likelihood)
    lines = []
    history = train(module, train_batches, types[~held_out], config=TrainConfig(epochs=8, batch_size=256),
                    validation=(test_batches, types[held_out]), log=lines.append)
    assert len(lines) == 8 and lines[-1].startswith("Epoch 8/8: loss=") and "val_acc=" in lines[-1]
    assert history[-1]["loss"] < history[0]["loss"]
    logits, _, _ = predict(module, test_batches, 512)
    balanced = balanced_accuracy_score(types[held_out].numpy(), logits.argmax(-1).numpy())
    assert balanced >= 0.98, balanced


def test_unsupervised_training_fits_the_prior_to_the_latent_means(cohort):
    batches = CSRBatches(cohort.counts)
    torch.manual_seed(0)
    module = GMVAEModule(cohort.counts.shape[1], 8, latent_dim=6, hidden_dims=(32,), likelihood="nb")
    initial = module.prior.mean.detach().clone()
    priors, lines = [], []
    unlabeled = torch.full((cohort.counts.shape[0],), -1)
    config = TrainConfig(epochs=3, batch_size=256, supervised=False, prior_fit_epoch=1)
    train(module, batches, unlabeled, config=config, log=lines.append,
          on_epoch=lambda history: priors.append([p.detach().clone() for p in
                                                  (module.prior.mean, module.prior.log_var, module.prior.logits)]))
    assert lines[1].startswith("Prior fitted to the latent means of 3,000 cells (EM, 8 components")
    assert not torch.allclose(priors[0][0], initial)
    assert not torch.equal(priors[0][0], priors[-1][0])  # it goes on learning after the fit
    # the prior's logits are the mixture's log weights
    assert torch.exp(priors[0][2]).sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def embedded_cohort():
    """The embedded cohort's highly variable genes as stage 01 leaves them: raw counts (CSR) and type codes."""
    demo = params.load(ROOT / "parameters" / "demo.yaml")
    adata = load_cohort(**dataclasses.asdict(demo.sections["data"]),
                        simulate=dataclasses.asdict(demo.sections["simulate"]), seed=demo.seed)
    adata = qc_normalize_hvg(adata, **dataclasses.asdict(demo.sections["preprocess"]))
    adata = adata[:, adata.var["highly_variable"].to_numpy()]
    return adata.layers["counts"].astype(np.float32), adata.obs["ct_cov"].cat.codes.to_numpy()


def test_unsupervised_gmvae_recovers_the_embedded_cohorts_cell_types(embedded_cohort):
    """The issue's bar (adjusted Rand index ≥ 0.9): batch 256, 12 epochs, the prior fitted after 4. With these
    settings seeds 5–10 gave 0.945–0.976 with zinb, seeds 5–6 0.968 and 0.952 with nb; mse falls short (0.813 and
    0.654, seeds 5 and 6). Tested with nb (zinb shares its code but for the zero inflation, which
    test_distributions and test_reference check)."""
    likelihood = "nb"
    counts, types = embedded_cohort
    batches = CSRBatches(counts)
    torch.manual_seed(5)
    module = GMVAEModule(counts.shape[1], 8, likelihood=likelihood)
    unlabeled = torch.full((counts.shape[0],), -1)
    config = TrainConfig(epochs=12, batch_size=256, supervised=False, prior_fit_epoch=4)
    train(module, batches, unlabeled, config=config, log=None, seed=5)
    called = predict(module, batches, 2048)[0].argmax(-1).numpy()
    assert adjusted_rand_score(types, called) >= 0.9


def test_unsupervised_prior_fit_must_fall_inside_training():
    with pytest.raises(ValueError, match="prior_fit_epoch must be at least 1 and less than epochs"):
        TrainConfig(epochs=5, supervised=False, prior_fit_epoch=5)
    TrainConfig(epochs=5, supervised=True, prior_fit_epoch=5)  # unused when supervised


def test_epoch_line_has_the_documented_fields():
    line = epoch_line({"epoch": 3, "loss": 1.5, "recon": 1.0, "kl": 0.4, "ce": 0.1, "acc": 0.9, "val_acc": 0.85,
                       "cells_per_s": 12345.6}, 10)
    assert line == ("Epoch  3/10: loss=1.5, recon=1, kl=0.4, ce=0.1, acc=0.9000, val_acc=0.8500, cells/s=12,346")

# The torchrun entry: one process vs two (gloo), resume, a killed rank.
HELD_OUT = ["P001", "P002", "P003"]
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_compiled_step_trains_like_the_eager_one(cohort, monkeypatch, cuda_graphs):
    """``compile=True`` changes kernels, not arithmetic: with eager random numbers the losses agree, for batches of
    varying shape (dynamic shapes) and for fixed-shape ones (on CUDA replayed as graphs; here the eager run takes
    the same padded batches)."""
    monkeypatch.setattr(training, "_fixed_shape_steps", lambda config, distributed: config.cuda_graphs)
    types = torch.from_numpy(cohort.obs["ct_cov"].cat.codes.to_numpy().astype(np.int64))
    batches = CSRBatches(cohort.counts[:1500])
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        module = GMVAEModule(cohort.counts.shape[1], 8, latent_dim=6, hidden_dims=(32,), likelihood="zinb")
        config = TrainConfig(epochs=2, batch_size=256, compile=compiled, cuda_graphs=cuda_graphs)
        # (the config's own patch: monkeypatch's undo would delete the setting from inductor's config module)
        with inductor_config.patch(fallback_random=True):
            losses[compiled] = [h["loss"] for h in train(module, batches, types[:1500], config=config, log=None)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


SMALL = ModuleConfig(likelihood="nb", latent_dim=10, hidden_dims=[128, 64])


@pytest.fixture(scope="module")
def trainset(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("trainset") / "trainset.h5"
    types = cohort.obs["ct_cov"]
    return write_trainset(path, cohort.counts, types.cat.codes.to_numpy(), component_names=list(types.cat.categories),
                          genes=list(cohort.var_names), validation=cohort.obs["ind_cov"].isin(HELD_OUT).to_numpy())


def test_trainset_shards_partition_the_cells_in_a_shuffled_order(cohort, trainset):
    shards = [read_shard(trainset, rank, 3) for rank in range(3)]
    cells = np.concatenate([s.cell_index for s in shards])
    assert sorted(cells) == list(range(cohort.counts.shape[0])) and list(cells) != sorted(cells)
    for shard in shards:
        assert (shard.counts != cohort.counts[shard.cell_index]).nnz == 0
        assert np.array_equal(shard.components, cohort.obs["ct_cov"].cat.codes.to_numpy()[shard.cell_index])


def test_trainset_written_in_blocks_of_rows_is_the_same_file(cohort, trainset, tmp_path, monkeypatch):
    monkeypatch.setattr(trainset_module, "BLOCK_ROWS", 97)  # several blocks, the last one short
    types = cohort.obs["ct_cov"]
    path = write_trainset(tmp_path / "blocks.h5", cohort.counts, types.cat.codes.to_numpy(),
                          component_names=list(types.cat.categories), genes=list(cohort.var_names),
                          validation=cohort.obs["ind_cov"].isin(HELD_OUT).to_numpy())
    with h5py.File(path) as blocks, h5py.File(trainset) as whole:
        assert sorted(blocks) == sorted(whole)
        for name in whole:
            assert blocks[name].dtype == whole[name].dtype and np.array_equal(blocks[name][:], whole[name][:]), name


def test_trainset_of_chosen_columns_is_the_file_of_those_columns_copied_out(cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(trainset_module, "BLOCK_ROWS", 97)
    types = cohort.obs["ct_cov"]
    columns = np.sort(np.random.default_rng(0).choice(cohort.counts.shape[1], 50, replace=False))
    common = dict(components=types.cat.codes.to_numpy(), component_names=list(types.cat.categories),
                  genes=list(cohort.var_names[columns]), validation=cohort.obs["ind_cov"].isin(HELD_OUT).to_numpy())
    chosen = write_trainset(tmp_path / "chosen.h5", cohort.counts, columns=columns, **common)
    copied = write_trainset(tmp_path / "copied.h5", cohort.counts[:, columns], **common)
    with h5py.File(chosen) as a, h5py.File(copied) as b:
        assert sorted(a) == sorted(b)
        for name in b:
            assert np.array_equal(a[name][:], b[name][:]), name
    with pytest.raises(ValueError, match="genes has 50 names for 49 columns"):
        write_trainset(tmp_path / "bad.h5", cohort.counts, columns=columns[1:], **common)


def test_batches_read_from_the_trainset_file_hold_what_the_read_shard_holds(trainset, monkeypatch):
    monkeypatch.setattr(trainset_module, "ENTRY_BLOCK", 1_000)  # several blocks, the last one short
    for rank in range(2):
        shard = read_shard(trainset, rank, 2)
        assert read_shard(trainset, rank, 2, counts=False).counts is None
        direct = CSRBatches.from_trainset(trainset, shard.start, shard.stop, device="cpu")
        reference = CSRBatches(shard.counts, device="cpu")
        assert (direct.n_rows, direct.n_genes, direct.placement) == (reference.n_rows, reference.n_genes, "resident")
        for name in ("indptr", "indices", "data"):
            assert torch.equal(getattr(direct, name), getattr(reference, name)), name


def test_trainset_stores_repeated_entries_once_and_an_old_format_is_refused(tmp_path):
    counts = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 2, 0]), np.array([0, 2, 3])), shape=(2, 4))
    assert not counts.has_canonical_format
    path = write_trainset(tmp_path / "t.h5", counts, np.zeros(2), component_names=["a"], genes=list("abcd"),
                          validation=np.zeros(2, bool))
    assert (read_shard(path).counts[np.argsort(read_shard(path).cell_index)] != counts).nnz == 0
    assert read_shard(path).counts.nnz == 2
    with h5py.File(path, "a") as f:
        f.attrs["format"] = "gmvae4p-trainset-1"
    with pytest.raises(ValueError, match="not a gmvae4p training set of this version"):
        read_shard(path)


def _held_out_accuracy(folder, cohort):
    with h5py.File(folder / training.EMBEDDING) as f:
        called = f["proba"][:].argmax(1)
    held = cohort.obs["ind_cov"].isin(HELD_OUT).to_numpy()
    return float((called[held] == cohort.obs["ct_cov"].cat.codes.to_numpy()[held]).mean())


def test_two_gloo_processes_match_one_and_write_one_checkpoint(cohort, trainset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    training.write_settings(one, SMALL, TrainConfig(epochs=6, batch_size=256))
    training.write_settings(two, SMALL, TrainConfig(epochs=6, batch_size=128))  # same effective batch
    training.run(trainset, one, log=None)
    lines = []
    launch(trainset, two, n_processes=2, device="cpu", log=lines.append)
    assert "2 process(es) × batch 128 = effective batch 256" in lines[0]
    assert sum(line.startswith("Epoch") for line in lines) == 6  # rank 0 alone logs
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "embedding.h5", "model.pt", "settings.json"]
    model = torch.load(two / training.MODEL, weights_only=True)
    assert model["complete"] and len(model["history"]) == 6
    # each rank reports its own shard: two halves of the cells, and its own peak host memory
    ranks = model["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["cells"] for r in ranks] == [read_shard(trainset, rank, 2).counts.shape[0] for rank in (0, 1)]
    assert sum(r["cells"] for r in ranks) == cohort.counts.shape[0]
    assert all(r["peak_gpu_gb"] == 0 and 0 < r["peak_host_gb"] < 64 for r in ranks)
    assert any("Peak memory per rank: rank 0: " in line and "; rank 1: " in line for line in lines)
    assert [r["cells"] for r in torch.load(one / training.MODEL, weights_only=True)["ranks"]] \
        == [cohort.counts.shape[0]]
    assert not torch.load(two / training.CHECKPOINT, weights_only=True)["complete"]
    single, double = _held_out_accuracy(one, cohort), _held_out_accuracy(two, cohort)
    assert single >= 0.95 and abs(single - double) <= 0.01, (single, double)


def _two_steps_on_rank(rank, folder, inputs, targets):
    """One rank of :func:`test_two_gloo_ranks_averaging_their_gradients_take_the_steps_of_one_process`: its own
    initial weights (rank 0's must win), its half of each batch, two SGD steps; it saves weights and last gradients."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)
        module = torch.nn.Linear(4, 3)
        averaged = training._AveragedGradients(module)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        rows = slice(rank * len(inputs) // 2, (rank + 1) * len(inputs) // 2)
        for _ in range(2):
            averaged.zero()
            torch.nn.functional.mse_loss(module(inputs[rows]), targets[rows]).backward()
            averaged.average()
            optimizer.step()
        torch.save({name: (p.detach(), p.grad) for name, p in module.named_parameters()}, f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_averaging_their_gradients_take_the_steps_of_one_process(tmp_path):
    generator = torch.Generator().manual_seed(1)
    inputs, targets = torch.randn(8, 4, generator=generator), torch.randn(8, 3, generator=generator)
    torch.multiprocessing.spawn(_two_steps_on_rank, args=(str(tmp_path), inputs, targets), nprocs=2)
    torch.manual_seed(0)  # rank 0's initial weights, the whole batch
    whole = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(whole.parameters(), lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(whole(inputs), targets).backward()
        optimizer.step()
    for rank in (0, 1):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, parameter in whole.named_parameters():
            torch.testing.assert_close(saved[name][0], parameter.detach())
            torch.testing.assert_close(saved[name][1], parameter.grad)


def _rank_shard(rank):
    """Rank 1's cells hold three times as many entries as rank 0's, and it has fewer of them."""
    return sp.random(120 - 40 * rank, 50, density=0.1 * (1 + 2 * rank), format="csr", random_state=rank,
                     dtype=np.float32)


def _fixed_shapes_on_rank(rank, folder):
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        batches, shapes = CSRBatches(_rank_shard(rank)), set()
        agree = lambda rows, entries: training._largest_over_ranks((rows, entries), "cpu")
        for seed in (0, 1):
            for positions, batch in batches.batches(4, seed=seed, fixed_shape=True, agree=agree):
                shapes.add((len(positions), len(batch.value)))
        torch.save({"shapes": sorted(shapes), "bound": batches.entry_bound}, f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_that_agree_serve_batches_of_one_shape_and_one_entry_bound(tmp_path):
    """A step recorded on every rank holds the gradients' all-reduce, so all ranks must record at the same step: their
    fixed-shape batches agree on rows and entries (the largest over the ranks), though their shards differ."""
    alone = []
    for rank in (0, 1):
        batches = CSRBatches(_rank_shard(rank))
        alone.append({(len(p), len(b.value)) for seed in (0, 1) for p, b in batches.batches(4, seed=seed,
                                                                                           fixed_shape=True)})
    assert alone[0] != alone[1]  # left to themselves the ranks would batch differently
    torch.multiprocessing.spawn(_fixed_shapes_on_rank, args=(str(tmp_path),), nprocs=2)
    saved = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert saved[0] == saved[1] and len(saved[0]["shapes"]) == 1
    rows, entries = saved[0]["shapes"][0]
    assert entries == saved[0]["bound"] and all(rows >= r and entries >= e for shapes in alone for r, e in shapes)


def test_under_two_processes_the_prior_is_fitted_to_every_rank_s_cells(cohort, trainset, tmp_path, monkeypatch):
    training.write_settings(tmp_path, SMALL, TrainConfig(epochs=2, batch_size=128, supervised=False,
                                                         prior_fit_epoch=1))
    scratch = tmp_path / "scratch"  # the temporary folder of this process and of torchrun's
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    lines = []
    launch(trainset, tmp_path, n_processes=2, device="cpu", log=lines.append)
    n_training = (~cohort.obs["ind_cov"].isin(HELD_OUT)).sum()
    assert sum(line.startswith(f"Prior fitted to the latent means of {n_training:,} cells") for line in lines) == 1
    assert torch.load(tmp_path / training.MODEL, weights_only=True)["complete"]
    assert not any(scratch.iterdir())  # torchrun's log folders are not left behind, one per fit


def test_a_rank_without_held_out_cells_still_trains_and_val_acc_comes_from_the_other(cohort, tmp_path):
    n_cells = cohort.counts.shape[0]
    stored = np.random.default_rng(0).permutation(n_cells)  # write_trainset's order for seed 0
    validation = np.zeros(n_cells, dtype=bool)
    validation[stored[:60]] = True  # the first stored cells: all in rank 0's shard of two
    types = cohort.obs["ct_cov"]
    path = write_trainset(tmp_path / "trainset.h5", cohort.counts, types.cat.codes.to_numpy(),
                          component_names=list(types.cat.categories), genes=list(cohort.var_names),
                          validation=validation)
    assert read_shard(path, 0, 2).validation.sum() == 60 and not read_shard(path, 1, 2).validation.any()
    training.write_settings(tmp_path / "run", SMALL, TrainConfig(epochs=2, batch_size=128))
    lines = []
    launch(path, tmp_path / "run", n_processes=2, device="cpu", log=lines.append)
    epochs = [line for line in lines if line.startswith("Epoch")]
    assert len(epochs) == 2 and all("val_acc=" in line for line in epochs)
    history = torch.load(tmp_path / "run" / training.MODEL, weights_only=True)["history"]
    assert all(0 <= h["val_acc"] <= 1 for h in history)


def test_resume_continues_where_the_checkpoint_stopped(trainset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    training.write_settings(straight, SMALL, TrainConfig(epochs=4, batch_size=256))
    full = training.run(trainset, straight, log=None)
    training.write_settings(resumed, SMALL, TrainConfig(epochs=2, batch_size=256))
    training.run(trainset, resumed, log=None)
    training.write_settings(resumed, SMALL, TrainConfig(epochs=4, batch_size=256))
    lines = []
    continued = training.run(trainset, resumed, resume=True, log=lines.append)
    assert "resuming after epoch 2" in lines[0] and [line[:9] for line in lines[1:3]] == ["Epoch 3/4", "Epoch 4/4"]
    np.testing.assert_allclose([h["loss"] for h in continued], [h["loss"] for h in full], rtol=1e-4)


def test_checkpoints_come_after_the_first_and_last_epochs_and_when_their_interval_has_passed(trainset, tmp_path,
                                                                                              monkeypatch):
    written = []
    original = training.save_state

    def spy(path, *args, history, **kwargs):
        if Path(path).name == training.CHECKPOINT:
            written.append(len(history))
        original(path, *args, history=history, **kwargs)

    monkeypatch.setattr(training, "save_state", spy)
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 1e9)
    training.write_settings(tmp_path / "rare", SMALL, TrainConfig(epochs=5, batch_size=256))
    training.run(trainset, tmp_path / "rare", log=None)
    assert written == [1, 5]
    written.clear()
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 0.0)
    training.write_settings(tmp_path / "every", SMALL, TrainConfig(epochs=5, batch_size=256))
    training.run(trainset, tmp_path / "every", log=None)
    assert written == [1, 2, 3, 4, 5]


def test_resume_without_a_checkpoint_or_with_other_settings_is_refused(trainset, tmp_path):
    training.write_settings(tmp_path, SMALL, TrainConfig(epochs=1))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.run(trainset, tmp_path, resume=True, log=None)
    training.run(trainset, tmp_path, log=None)
    training.write_settings(tmp_path, ModuleConfig(likelihood="zinb"), TrainConfig(epochs=2))
    with pytest.raises(ValueError, match="module settings"):
        training.run(trainset, tmp_path, resume=True, log=None)


def test_a_killed_rank_fails_the_launch_with_its_error_and_nothing_is_marked_complete(trainset, tmp_path):
    training.write_settings(tmp_path, SMALL, TrainConfig(epochs=50, batch_size=128))

    def kill_rank_one(line):
        if not line.startswith("Epoch  1/"):
            return
        for process in psutil.Process().children(recursive=True):
            try:
                if process.environ().get("LOCAL_RANK") == "1":
                    process.kill()
            except psutil.Error:
                pass

    with pytest.raises(TrainingFailed, match=r"(?s)failed on rank 1.*SIGKILL"):
        launch(trainset, tmp_path, n_processes=2, device="cpu", log=kill_rank_one)
    assert not (tmp_path / training.MODEL).exists()
    assert not torch.load(tmp_path / training.CHECKPOINT, weights_only=True)["complete"]


def test_a_rank_killed_by_a_signal_is_named_even_when_torchrun_blames_the_rank_it_left_stranded():
    summary = "\n".join([
        "=" * 60, "gmvae4p.gmvae.train FAILED", "-" * 60, "Failures:", "[1]:", "  time      : 2026-11-24_10:00:02",
        "  rank      : 1 (local_rank: 1)", "  exitcode  : -9 (pid: 11)",
        "  traceback : Signal 9 (SIGKILL) received by PID 11", "-" * 60, "Root Cause (first observed failure):",
        "[0]:", "  time      : 2026-11-24_10:00:01", "  rank      : 0 (local_rank: 0)", "  exitcode  : 1 (pid: 10)",
        "  traceback : RuntimeError: Connection closed by peer", "=" * 60])
    message = launch_module._failure_message(1, {0: ["Epoch 1/5: loss=3"], 1: ["Epoch 1/5: loss=2"]}, summary)
    assert message.startswith("GMVAE training failed on rank 1;") and "SIGKILL" in message
    assert "Epoch 1/5: loss=2" in message and "Also failed: rank 0" in message
    assert "Connection closed" not in message.split("(Also")[0]
    stopped = summary.replace("RuntimeError: Connection closed by peer", "Signal 15 (SIGTERM) received by PID 10")
    assert launch_module._failure_message(1, {}, stopped).startswith("GMVAE training failed on rank 1;")
    without_signal = summary.replace("Signal 9 (SIGKILL) received by PID 11", "ValueError: bad")
    assert launch_module._failure_message(1, {}, without_signal).startswith("GMVAE training failed on rank 0;")


def test_ranks_share_the_cores_left_by_busy_work_unless_the_user_set_the_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launch_module.os, "cpu_count", lambda: 16)
    assert launch_module.rank_threads(2) == 8
    assert launch_module.rank_threads(2, busy_cores=1) == 7
    monkeypatch.setattr(launch_module.os, "cpu_count", lambda: 2)
    assert launch_module.rank_threads(1, busy_cores=1) == 1
    assert launch_module.rank_threads(4) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch_module.rank_threads(1, busy_cores=1) == 3
    with pytest.raises(ValueError, match="busy_cores must be at least 0"):
        launch_module.rank_threads(1, busy_cores=-1)
