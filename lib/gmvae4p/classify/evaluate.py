"""Stage 04's evaluation: GMVAE4P and every baseline on the same patient-grouped folds, and the tables.

:func:`cross_validate` trains each method once per outer fold (gene and interaction selection, scalers and early
stopping see the fold's training and validation units only) and predicts the fold's test units; the per-unit
probability is the mean over the unit's mixture samples. It also keeps what the figures need from GMVAE4P on the
test units (fusion weights, fused representations) and the bulk-deployment predictions of Table 3.
"""

from __future__ import annotations

import dataclasses
import resource
import sys

import anndata as ad
import numpy as np
import pandas as pd
from tqdm import tqdm  # text bars: the same in a terminal, a notebook and a papermill log

from .. import keys
from .baselines import BASELINES, fit_predict_baselines
from .cell_baselines import CELL_BASELINES, CellData, fit_predict_cell_baselines
from .config import METHODS, N_TOP_GENES, N_TOP_INTERACTIONS, ClassifierConfig
from .cv import Fold, FoldError, patient_folds, permute_labels, sample_labels, subsample_fold
from .metrics import auc, auc_with_ci, binary_metrics, unit_probabilities
from .model import MODALITIES, GMVAE4P
from .workers import FoldWorkers, Pending

GMVAE4P_NAME = METHODS[0]
SCRNA_NAME = "gmvae4p_scrna"
"""Table 1's row of GMVAE4P given each test unit's true single-cell modalities (the scRNA mode), made beside
``gmvae4p`` whenever its network reads modalities."""
COSTLY_METHODS = (GMVAE4P_NAME, "prototype_cells", "per_type_networks", "random_forest", "xgboost")
"""Methods whose refits take far longer: fewer permutations in the null (``null_permutations_costly``)."""
PREDICTION_COLUMNS = ["method", "fold", "unit", "label", "probability"]


@dataclasses.dataclass
class CrossValidation:
    """Out-of-fold results.

    ``predictions``: per method and test unit (:data:`PREDICTION_COLUMNS`). ``fusion``: GMVAE4P's mean fusion
    weights per test unit (fold, unit, label, one column per modality). ``fused``: its mean fused representation per
    test unit. ``deployment``: per test unit, GMVAE4P on the whole-unit pseudobulk from bulk alone and with the true
    modalities. ``seconds``: wall time of each method summed over its folds (folds may run side by side, see
    :class:`~gmvae4p.classify.workers.FoldWorkers`). ``histories``: GMVAE4P's epochs per fold. ``program``: the genes
    of the disease program GMVAE4P learned in each fold (fold, gene, loading, seed: whether it seeded the program;
    empty with ``bulk_input: genes``). ``stack``: per fold and learner of GMVAE4P, its stack weight (bulk input and
    scRNA mode), scale and AUC on its held-out training units, the fold's temperatures
    (:meth:`~gmvae4p.classify.model.GMVAE4P.stack_table`).
    ``learners``: per test mixture sample (fold, sample, unit, label) each of GMVAE4P's learners' own probability
    from bulk, what its stack combined, and ``network_scrna``, the network's given the true modalities (what the
    scRNA mode's stack combined in its place); with the stack's table, any other rule can be scored without refitting.
    """

    predictions: pd.DataFrame
    fusion: pd.DataFrame
    fused: pd.DataFrame
    deployment: pd.DataFrame
    seconds: dict[str, float]
    histories: dict[int, list[dict]]
    program: pd.DataFrame
    stack: pd.DataFrame
    learners: pd.DataFrame


def cross_validate(samples: ad.AnnData, units: pd.DataFrame, folds: list[Fold], *, cells: CellData | None = None,
                   methods: list[str] | None = None, config: ClassifierConfig = ClassifierConfig(),
                   n_top_genes: int = N_TOP_GENES, n_top_interactions: int = N_TOP_INTERACTIONS,
                   modalities: tuple[str, ...] = MODALITIES, sources: dict[str, str] | None = None,
                   device: str | None = None, seed: int = 0,
                   workers: FoldWorkers | None = None, progress: bool = True) -> CrossValidation:
    """Every method in ``methods`` (default :data:`METHODS`) on ``folds``; labels come from ``units``
    (:func:`~gmvae4p.classify.cv.unit_table`, or its permutation for the null control). The cell-level baselines
    need ``cells``; ``modalities`` and ``sources`` are GMVAE4P's (:class:`~gmvae4p.classify.model.GMVAE4P`).

    Every method's folds run on ``workers`` (:class:`~gmvae4p.classify.workers.FoldWorkers` made from the same
    ``samples`` and ``cells``; default: in this process)."""
    return start_cross_validation(samples, units, folds, cells=cells, methods=methods, config=config,
                                  n_top_genes=n_top_genes, n_top_interactions=n_top_interactions,
                                  modalities=modalities, sources=sources, device=device, seed=seed,
                                  workers=workers).result(progress=progress)


@dataclasses.dataclass
class PendingCrossValidation:
    """A cross-validation whose folds may still be running (:func:`start_cross_validation`)."""

    methods: list[str]
    tasks: list[tuple[str, int, object]]
    """(method, fold index, handle of that fold's task) in submission order."""

    def result(self, *, progress: bool = True) -> CrossValidation:
        parts, fusion, fused, deployment, program, stack, learners = [], [], [], [], [], [], []
        histories, seconds = {}, {}
        for method, fold, task in tqdm(self.tasks, desc="Folds", disable=not progress or not self.tasks):
            value, elapsed = task.result()
            seconds[method] = seconds.get(method, 0.0) + elapsed
            if method != GMVAE4P_NAME:
                parts.append(value)
                continue
            parts.append(value["predictions"])
            fusion.append(value["fusion"])
            fused.append(value["fused"])
            deployment.append(value["deployment"])
            program.append(value["program"])
            stack.append(value["stack"])
            learners.append(value["learners"])
            histories[fold] = value["history"]
        concat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        names = [n for m in self.methods for n in ([m, SCRNA_NAME] if m == GMVAE4P_NAME else [m])]
        order = {m: i for i, m in enumerate(names)}  # rows by method as asked for, then by fold
        predictions = concat(parts)[PREDICTION_COLUMNS]
        predictions = predictions.sort_values(["method", "fold"], key=lambda c: c.map(order) if c.name == "method"
                                              else c, kind="stable").reset_index(drop=True)
        return CrossValidation(predictions, concat(fusion), concat(fused), concat(deployment),
                               {m: seconds[m] for m in self.methods}, histories, concat(program), concat(stack),
                               concat(learners))


def start_cross_validation(samples: ad.AnnData, units: pd.DataFrame, folds: list[Fold], *,
                           cells: CellData | None = None, methods: list[str] | None = None,
                           config: ClassifierConfig = ClassifierConfig(), n_top_genes: int = N_TOP_GENES,
                           n_top_interactions: int = N_TOP_INTERACTIONS, modalities: tuple[str, ...] = MODALITIES,
                           sources: dict[str, str] | None = None, device: str | None = None, seed: int = 0,
                           workers: FoldWorkers | None = None) -> PendingCrossValidation:
    """:func:`cross_validate` in two steps: submits every method's folds to ``workers`` and returns; ``.result()``
    waits for them. Starting several before collecting any keeps every worker busy (Tables 2 and 4). The
    scikit-learn methods are tasks too: run here beside the workers, their threads would outnumber the cores."""
    methods = list(METHODS) if methods is None else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {list(METHODS)}.")
    if cells is None and set(methods) & set(CELL_BASELINES):
        raise ValueError(f"the cell-level baselines {list(CELL_BASELINES)} need the cells (stage 02's gmvae.h5ad).")
    if workers is None:
        workers = FoldWorkers(samples, cells)
    workers.check(samples, cells)
    y = sample_labels(samples, units)
    y_unit = units.set_index("unit")["y"]
    tasks = []
    for method in methods:
        for fold in folds:
            if method == GMVAE4P_NAME:
                task = workers.submit(_gmvae4p_fold, y, fold, config, n_top_genes, n_top_interactions, modalities,
                                      sources, device, seed)
            elif method in BASELINES:
                task = workers.submit(_baseline_fold, method, y, fold, n_top_genes, seed)
            else:
                task = workers.submit(_cell_baseline_fold, method, y_unit, fold, config, n_top_genes, device, seed)
            tasks.append((method, fold.index, task))
    return PendingCrossValidation(methods, tasks)


def _baseline_fold(shared, method, y, fold: Fold, n_top_genes, seed) -> pd.DataFrame:
    return fit_predict_baselines(shared["samples"], y, [fold], methods=[method], n_top_genes=n_top_genes, seed=seed)


def _cell_baseline_fold(shared, method, y_unit, fold: Fold, config, n_top_genes, device, seed) -> pd.DataFrame:
    return fit_predict_cell_baselines(shared["cells"], y_unit, [fold], methods=[method], config=config,
                                      n_top_genes=n_top_genes, device=device, seed=seed)


def _gmvae4p_fold(shared, y, fold: Fold, config, n_top_genes, n_top_interactions, modalities, sources, device,
                  seed) -> dict:
    """GMVAE4P on one fold: mixture-sample predictions of the test units, and their whole-unit samples from bulk
    alone and with the true modalities (Table 3)."""
    samples = shared["samples"]
    unit = samples.obs["unit"].astype(str).to_numpy()
    kind = samples.obs[keys.KIND].to_numpy()
    rows = {side: np.flatnonzero((kind == keys.MIXTURE) & np.isin(unit, getattr(fold, side)))
            for side in ("train", "validation", "test")}
    model = GMVAE4P(config, n_top_genes=n_top_genes, n_top_interactions=n_top_interactions, modalities=modalities,
                    sources=sources, device=device, seed=seed + fold.index)
    model.fit(samples, y, train=rows["train"], validation=rows["validation"])
    test = rows["test"]
    predicted = model.predict(samples, test)
    per_unit = lambda probability, name: unit_probabilities(pd.DataFrame(
        {"unit": unit[test], "label": y[test], "probability": probability})).assign(method=name, fold=fold.index)
    predictions = [per_unit(predicted.probability, GMVAE4P_NAME)]
    learners = predicted.learners.reset_index(drop=True)
    if model.modalities and "network" in config.learners:  # the same model given the true modalities
        given = model.predict(samples, test, use_true=True)
        predictions.append(per_unit(given.probability, SCRNA_NAME))
        learners["network_scrna"] = given.learners["network"].to_numpy()
    label = predictions[0].set_index("unit")["label"]
    weights = predicted.fusion_weights.set_axis(unit[test]).groupby(level=0).mean()
    embedding = pd.DataFrame(predicted.fused, index=unit[test]).groupby(level=0).mean()
    embedding.columns = [f"fused_{j}" for j in embedding.columns]
    whole = np.flatnonzero((kind == keys.WHOLE) & np.isin(unit, fold.test))
    deployment = pd.DataFrame({"fold": fold.index, "unit": unit[whole], "label": y[whole],
                               "bulk": model.predict(samples, whole).probability,
                               "scrna": model.predict(samples, whole, use_true=True).probability
                               if len(predictions) > 1 else np.nan})
    frame = lambda values: values.rename_axis("unit").reset_index().assign(fold=fold.index,
                                                                           label=lambda d: label.loc[d["unit"]].values)
    learned = model.program
    program = pd.DataFrame({"fold": fold.index, "gene": samples.var_names[learned.genes],
                            "loading": learned.loading, "seed": np.isin(learned.genes, learned.seed_genes)}) \
        if learned is not None else pd.DataFrame()
    return {"predictions": pd.concat(predictions, ignore_index=True), "fusion": frame(weights),
            "fused": frame(embedding), "deployment": deployment, "program": program,
            "stack": model.stack_table().assign(fold=fold.index), "history": model.history,
            "learners": pd.concat([pd.DataFrame({"fold": fold.index, "sample": samples.obs_names[test],
                                                 "unit": unit[test], "label": y[test]}), learners], axis=1)}


def program_table(program: pd.DataFrame, *, n_folds: int, disease_genes=None) -> pd.DataFrame:
    """Per gene of GMVAE4P's learned disease program (:attr:`CrossValidation.program`): in how many of the
    ``n_folds`` folds it was in the program (``folds``), as a seed gene (``seed_folds``), its mean loading; with
    ``disease_genes`` (a simulated cohort's truth), whether it is one. Most frequent first."""
    if program.empty:
        return pd.DataFrame(columns=["gene", "folds", "share_of_folds", "seed_folds", "mean_loading"])
    table = program.groupby("gene").agg(folds=("fold", "nunique"), seed_folds=("seed", "sum"),
                                        mean_loading=("loading", "mean")).reset_index()
    table.insert(2, "share_of_folds", table["folds"] / n_folds)
    if disease_genes is not None:
        table["disease_gene"] = table["gene"].isin(set(map(str, disease_genes)))
    return table.sort_values(["folds", "mean_loading"], ascending=False).reset_index(drop=True)


def positive_label(cells: ad.AnnData, samples: ad.AnnData, chosen: str | None) -> str:
    """``chosen``, or the simulator's positive label when ``None``; real data must name it."""
    if chosen is not None:
        return chosen
    truth = cells.uns.get(keys.UNS_SIMULATION)
    if truth is None:
        labels = sorted(map(str, samples.obs["label"].unique())) if "label" in samples.obs else []
        raise FoldError(f"classify.positive_label is null: name the positive label, one of {labels}.")
    return str(truth["positive_label"])


def permutation_null(samples: ad.AnnData, units: pd.DataFrame, *, progress: bool = True, **settings) -> pd.DataFrame:
    """The null distribution of every method's AUC (:func:`start_permutation_null`'s ``settings``), waited for."""
    return start_permutation_null(samples, units, **settings).result(progress=progress)


def start_permutation_null(samples: ad.AnnData, units: pd.DataFrame, *, methods: list[str], n_permutations: int,
                           n_permutations_costly: int, n_folds: int, validation_fraction: float = 0.2, seed: int = 0,
                           first: int = 0, **settings) -> Pending:
    """The null distribution of every method's AUC: labels permuted across patients (within patients in a paired
    design: :func:`~gmvae4p.classify.cv.permute_labels`) before anything is fitted, folds drawn again for the
    permuted labels, every method refitted; the :data:`COSTLY_METHODS` take ``n_permutations_costly``
    permutations, the others ``n_permutations``. ``settings`` are :func:`start_cross_validation`'s. Every
    permutation's folds are submitted now; ``.result()`` is one row per (method, permutation) with its per-unit AUC.
    Permutation ``k`` is the same in every call; ``first`` starts at permutation ``first``, so that calls with
    ``first`` 0, 10, 20, … add up to one longer null."""
    count = {m: n_permutations_costly if m in COSTLY_METHODS else n_permutations for m in methods}
    pending = []
    for k in range(first, first + max(count.values(), default=0)):
        permuted = permute_labels(units, seed + 1 + k)
        folds = patient_folds(permuted, n_folds=n_folds, validation_fraction=validation_fraction, seed=seed)
        chosen = [m for m in methods if count[m] > k - first]
        pending.append(start_cross_validation(samples, permuted, folds, methods=chosen, seed=seed, **settings))

    def collect(progress: bool) -> tuple[pd.DataFrame, float]:
        rows, seconds = [], 0.0
        for k, run in enumerate(tqdm(pending, desc="Permutations", disable=not progress), start=first):
            done = run.result(progress=False)
            seconds += sum(done.seconds.values())
            for method, part in done.predictions.groupby("method", sort=False):
                rows.append({"method": method, "permutation": k, "auc": auc(part["label"], part["probability"])})
        return pd.DataFrame(rows, columns=["method", "permutation", "auc"]), seconds
    return Pending(collect)


def with_null(table1: pd.DataFrame, null: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with each method's permutation null: its mean and 95 % range, the number of permutations and the
    real AUC's permutation p-value (b + 1) / (N + 1), b the permutations scoring at least the real AUC."""
    rows = []
    for method, real in table1.set_index("method")["auc"].items():
        values = null.loc[null["method"] == method, "auc"].to_numpy()
        rows.append({"method": method, "null_mean": values.mean() if len(values) else np.nan,
                     "null_low": np.quantile(values, 0.025) if len(values) else np.nan,
                     "null_high": np.quantile(values, 0.975) if len(values) else np.nan,
                     "n_permutations": len(values),
                     "p_value": (1 + (values >= real - 1e-12).sum()) / (1 + len(values)) if len(values) else np.nan})
    return table1.merge(pd.DataFrame(rows), on="method", how="left")


def patients_of(rows: pd.DataFrame, units: pd.DataFrame | None) -> np.ndarray | None:
    """The patient of each row's ``unit`` (``units``: :func:`~gmvae4p.classify.cv.unit_table`); ``None`` (each unit
    its own patient) without ``units``. Bootstrap intervals resample these patients."""
    if units is None:
        return None
    return units.set_index("unit")["patient"].astype(str).loc[rows["unit"].astype(str)].to_numpy()


ORACLE_ACTIVITY = "oracle (simulated activity)"
ORACLE_PROGRAM = "oracle (true disease program, pseudobulk)"
"""The reference rows of Table 1 for a simulated cohort (:func:`reference_aucs`); the figures know them by the
``oracle`` prefix."""


def main_table(predictions: pd.DataFrame, *, units: pd.DataFrame | None = None,
               references: dict[str, tuple[float, float, float]] | None = None, n_boot: int = 1000,
               seed: int = 0) -> pd.DataFrame:
    """Table 1: per method, the per-unit metrics of its out-of-fold predictions (:func:`binary_metrics`, intervals
    over the patients of ``units``: :func:`patients_of`); then one row per reference AUC with its CI (name →
    (AUC, low, high), e.g. :func:`reference_aucs`)."""
    rows = [{"method": method, **binary_metrics(part["label"], part["probability"], patients=patients_of(part, units),
                                                n_boot=n_boot, seed=seed)}
            for method, part in predictions.groupby("method", sort=False)]
    rows += [{"method": name, "auc": auc, "auc_low": low, "auc_high": high}
             for name, (auc, low, high) in (references or {}).items()]
    return pd.DataFrame(rows)


def reference_aucs(cells: ad.AnnData, samples: ad.AnnData, units: pd.DataFrame, *, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """For a simulated cohort, the two ceilings Table 1 is read against (empty for real data):

    - :data:`ORACLE_ACTIVITY`: the AUC of the true per-patient disease activity, which no model of the data can be
      expected to beat;
    - :data:`ORACLE_PROGRAM`: the AUC of the true disease program read from the same pseudobulk the methods see —
      per mixture sample the sum of the disease genes' log-CPM weighted by their true weights, averaged per unit —
      what a model that knew the program's genes and weights exactly would score from this expression (below the
      activity's: pseudobulk samples are noisy reads of it).

    Neither is fitted: both read the simulator's truth (``cells.uns["simulation"]``). A cohort simulated with no
    effect of the activity (``effect_size`` and ``composition_shift`` 0) has none; one whose activity moves
    composition only (``effect_size`` 0) has no program ceiling."""
    truth = cells.uns.get(keys.UNS_SIMULATION)
    if truth is None:
        return {}
    shift = float(truth.get("parameters", {}).get("composition_shift", 1.0))
    no_program = float(truth.get("effect_size", 1.0)) == 0
    if no_program and shift == 0:
        return {}  # the activity drives nothing in the data: there is no ceiling to read the methods against
    activity = pd.Series(np.asarray(truth["patient_activity"]), index=np.asarray(truth["patients"]).astype(str))
    weights = pd.Series(np.asarray(truth["disease_gene_weights"], dtype=float),
                        index=np.asarray(truth["disease_genes"]).astype(str))
    genes = weights.index.intersection(samples.var_names)
    mixture = (samples.obs[keys.KIND] == keys.MIXTURE).to_numpy()
    program = samples[mixture, genes].X
    score = pd.Series(np.asarray(program @ weights.loc[genes].to_numpy()).ravel(),
                      index=samples.obs.loc[mixture, "unit"].astype(str).to_numpy()).groupby(level=0).mean()
    y = units["y"].to_numpy()
    patients = units["patient"].astype(str).to_numpy()
    references = {ORACLE_ACTIVITY: auc_with_ci(y, activity.loc[patients].to_numpy(), patients=patients,
                                               n_boot=n_boot, seed=seed)}
    if not no_program:  # the program's genes carry nothing when the activity does not move them
        references[ORACLE_PROGRAM] = auc_with_ci(y, score.loc[units["unit"].astype(str)].to_numpy(),
                                                 patients=patients, n_boot=n_boot, seed=seed)
    return references


def deployment_table(deployment: pd.DataFrame, *, units: pd.DataFrame | None = None, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Table 3: held-out units' whole-unit pseudobulk classified from bulk alone vs with the true scRNA
    modalities; ``retention`` = AUC(bulk) / AUC(scRNA)."""
    patients = patients_of(deployment, units)
    rows = [{"input": name, **binary_metrics(deployment["label"], deployment[column], patients=patients,
                                             n_boot=n_boot, seed=seed)}
            for name, column in (("bulk only (whole-unit pseudobulk)", "bulk"), ("scRNA modalities given", "scrna"))]
    table = pd.DataFrame(rows)
    table["retention"] = table["auc"] / table["auc"].iloc[1]
    return table


def small_cohort_table(samples: ad.AnnData, units: pd.DataFrame, folds: list[Fold], *, progress: bool = True,
                       **settings) -> pd.DataFrame:
    """Table 2 (:func:`start_small_cohort_table`'s ``settings``), waited for."""
    return start_small_cohort_table(samples, units, folds, **settings).result(progress=progress)


def start_small_cohort_table(samples: ad.AnnData, units: pd.DataFrame, folds: list[Fold], *, sizes: list[int],
                             repeats: int, methods: list[str], cells: CellData | None = None,
                             config: ClassifierConfig = ClassifierConfig(), validation_fraction: float = 0.2,
                             n_top_genes: int = N_TOP_GENES, n_top_interactions: int = N_TOP_INTERACTIONS,
                             device: str | None = None, seed: int = 0,
                             workers: FoldWorkers | None = None) -> Pending:
    """Table 2: each method trained on ``n`` units drawn (grouped by patient, stratified) from each fold's training
    units, for each ``n`` in ``sizes`` and ``repeats`` draws, tested on the same held-out folds. Every draw's folds
    are submitted to ``workers`` now; ``.result()`` is one row per (method, n, repeat) with the AUC and CI of its
    pooled out-of-fold unit predictions."""
    workers = workers or FoldWorkers(samples, cells)
    draws = [(n, repeat) for n in sizes for repeat in range(repeats)]
    pending = []
    for n, repeat in draws:
        draw_seed = seed + 1000 * n + repeat
        drawn = [subsample_fold(fold, units, n_units=n, validation_fraction=validation_fraction, seed=draw_seed)
                 for fold in folds]
        pending.append(start_cross_validation(samples, units, drawn, cells=cells, methods=methods, config=config,
                                              n_top_genes=n_top_genes, n_top_interactions=n_top_interactions,
                                              device=device, seed=draw_seed, workers=workers))

    def collect(progress: bool) -> tuple[pd.DataFrame, float]:
        rows, seconds = [], 0.0
        for (n, repeat), draw in zip(tqdm(draws, desc="Small cohorts", disable=not progress), pending):
            done = draw.result(progress=False)
            seconds += sum(done.seconds.values())
            for method, part in done.predictions.groupby("method", sort=False):
                if method not in methods:  # GMVAE4P's scRNA mode comes with it; Table 2 is about bulk
                    continue
                auc, low, high = auc_with_ci(part["label"], part["probability"], patients=patients_of(part, units),
                                             seed=seed)
                rows.append({"method": method, "n_train_units": n, "repeat": repeat, "auc": auc, "auc_low": low,
                             "auc_high": high})
        return pd.DataFrame(rows, columns=["method", "n_train_units", "repeat", "auc", "auc_low", "auc_high"]), seconds
    return Pending(collect)


def small_cohort_summary(table2: pd.DataFrame) -> pd.DataFrame:
    """Table 2 in short: mean, SD and count of the AUC over repeats, per training size (rows) and method."""
    if table2.empty:
        return pd.DataFrame()
    return table2.groupby(["method", "n_train_units"])["auc"].agg(["mean", "std", "count"]).unstack(0)


def check_small_cohort_sizes(units: pd.DataFrame, folds: list[Fold], sizes: list[int]) -> None:
    """Every size must leave both labels in a fold's training units and not exceed them."""
    available = min(len(f.train) + len(f.validation) for f in folds)
    bad = [n for n in sizes if not 2 <= n <= available]
    if bad:
        raise FoldError(f"small_cohort_sizes {bad} must lie between 2 and {available} (the fewest training units "
                        "of a fold).")


def compute_table(run_record: dict | None, seconds: dict[str, float], *, stage: str = "04_classify") -> pd.DataFrame:
    """Table 5: measured wall time, peak host and GPU memory of the stages run so far (from ``run.json``; GPU memory
    where it was recorded), then this stage's steps (each one's tasks' wall time summed: tasks run side by side in
    the fold workers, so the steps add up to more than the stage) and this process's peak resident memory so far."""
    rows = [{"stage": s["stage"], "step": "whole stage", "wall_s": s.get("wall_s"), "peak_rss_gb": s.get("peak_rss_gb"),
             "peak_gpu_gb": s.get("peak_gpu_gb")}
            for s in (run_record or {}).get("stages", []) if s.get("status") == "complete"]
    rows += [{"stage": stage, "step": method, "wall_s": round(value, 3), "peak_rss_gb": None}
             for method, value in seconds.items()]
    rows.append({"stage": stage, "step": "peak of this process so far", "wall_s": None, "peak_rss_gb": _peak_rss_gb()})
    return pd.DataFrame(rows)


def _peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 3)
