"""GMVAE4P for new patients: fitted on the whole cohort, saved as a folder, applied to bulk RNA-seq counts.

Stage 04 fits the final model on every unit (:func:`fit_final`: the settings the cross-validation evaluated, the
program, gene list and scalers from all units; :func:`start_final` fits it in a fold worker) and saves it
(:func:`save`) under ``models/gmvae4p/``:

- ``model.pt``: tensors only (``torch.load(weights_only=True)`` reads it): the network's weights and every fitted
  array (genes kept, scalers, the program, the linear coefficients);
- ``model.json``: what they mean: the training genes and their median log-CPM, the labels, the settings, the stack;
- ``model_card.md``: the same for a reader, with the cross-validated metrics of the training cohort.

:func:`predict` scores new samples given as raw counts (samples × genes; :func:`read_counts` reads a table or sums an
``.h5ad`` of cells per sample): counts → log-CPM over the model's genes found → every learner → the stack. A model
gene missing from the input takes its training median; below ``min_overlap`` of the model's genes the input is
refused. With cells, the scRNA mode is scored too (:func:`scrna_modalities`): the bundle keeps stage 02's GMVAE
(``gmvae.pt``), which embeds the new cells; their proportions, states and communication per sample are made as stage
03 makes a whole-unit sample's, and the network reads them instead of predicting them from bulk.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import keys, package_versions
from ..modalities import communication, states
from ..pseudobulk import MixturePlan, log_cpm
from .config import ClassifierConfig
from .cv import final_split, sample_labels
from .model import BULK, GMVAE4P, FoldFeatures, ModalityNetwork, _Learners
from .module import GMVAE4PModule
from .program import LearnedProgram
from .stack import Stack
from .workers import FoldWorkers, Pending

MIN_OVERLAP = 0.8
"""Share of the model's genes an input must have (matched by symbol) to be scored."""
WEIGHTS, META, CARD, GMVAE_WEIGHTS = "model.pt", "model.json", "model_card.md", "gmvae.pt"
CARD_PACKAGES = ("gmvae4p", "torch", "scikit-learn", "numpy", "anndata")


class InputError(ValueError):
    """An input that cannot be scored; the message says why in one sentence."""


def fit_final(samples: ad.AnnData, units: pd.DataFrame, config: ClassifierConfig, *, n_top_genes: int,
              n_top_interactions: int, validation_fraction: float = 0.2, device: str | None = None,
              seed: int = 0) -> GMVAE4P:
    """GMVAE4P fitted on the mixture samples of every unit in ``units``; a patient-grouped share
    ``validation_fraction`` of them drives the network's early stopping, as in each cross-validation fold."""
    y = sample_labels(samples, units)
    split = final_split(units, validation_fraction=validation_fraction, seed=seed)
    unit = samples.obs["unit"].astype(str).to_numpy()
    mixture = samples.obs[keys.KIND].to_numpy() == keys.MIXTURE
    rows = {side: np.flatnonzero(mixture & np.isin(unit, getattr(split, side))) for side in ("train", "validation")}
    model = GMVAE4P(config, n_top_genes=n_top_genes, n_top_interactions=n_top_interactions, device=device, seed=seed)
    return model.fit(samples, y, train=rows["train"], validation=rows["validation"])


def start_final(workers: FoldWorkers, units: pd.DataFrame, config: ClassifierConfig, *, n_top_genes: int,
                n_top_interactions: int, validation_fraction: float = 0.2, device: str | None = None,
                seed: int = 0) -> Pending:
    """:func:`fit_final` on the workers' samples as one of their tasks, so that it trains beside the folds of the
    tables submitted with it; ``.result()`` is the fitted model, on the CPU."""
    task = workers.submit(_fit_final_state, units, config, n_top_genes, n_top_interactions, validation_fraction,
                          device, seed)

    def collect(progress: bool) -> tuple[GMVAE4P, float]:
        (arrays, meta), seconds = task.result()
        return _from_state(arrays, meta, "cpu"), seconds
    return Pending(collect)


def _fit_final_state(shared: dict, units, config, n_top_genes, n_top_interactions, validation_fraction, device,
                     seed) -> tuple[dict[str, np.ndarray], dict]:
    # the fitted arrays and settings, as save writes them: a model trained on a GPU comes back without CUDA tensors
    return _state(fit_final(shared["samples"], units, config, n_top_genes=n_top_genes,
                            n_top_interactions=n_top_interactions, validation_fraction=validation_fraction,
                            device=device, seed=seed))


def save(model: GMVAE4P, folder: str | os.PathLike, *, samples: ad.AnnData, labels: tuple[str, str],
         cohort: dict, metrics: pd.DataFrame | None = None, gmvae: str | os.PathLike | None = None) -> Path:
    """Write ``model`` to ``folder`` (replaced whole, never left half-written). ``samples``: the training pseudobulk
    (its genes, and the median log-CPM that stands in for a gene an input lacks); ``labels``: (negative, positive);
    ``cohort``: what the card says of the training cohort (file, units, patients, label counts); ``metrics``: Table
    1's rows to quote; ``gmvae``: stage 02's ``model.pt``, kept as ``gmvae.pt`` for the scRNA mode of new cells."""
    arrays, meta = _state(model)
    whole = samples.obs[keys.KIND].to_numpy() == keys.WHOLE
    expression = np.asarray(samples.X, dtype=np.float32)[whole if whole.any() else slice(None)]
    meta.update(genes=list(map(str, samples.var_names)), labels=list(labels), cohort=cohort,
                threshold=0.5, min_overlap=MIN_OVERLAP,
                versions={k: v for k, v in package_versions(CARD_PACKAGES).items() if v})
    if gmvae is not None:  # what the scRNA mode needs to make new cells' modalities as stage 03 made the training's
        made = samples.uns[keys.UNS_PSEUDOBULK]
        meta["scrna"] = {name: list(map(str, made[name]))
                         for name in ("cell_types", "state_features", "communication_features")}
        meta["scrna"]["ligand_receptor_pairs"] = {k: list(map(str, v)) for k, v in made["ligand_receptor_pairs"].items()}
    arrays["medians"] = np.median(expression, axis=0)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        torch.save({name: torch.as_tensor(np.asarray(value)) for name, value in arrays.items()}, temporary / WEIGHTS)
        (temporary / META).write_text(json.dumps(meta, indent=1))
        (temporary / CARD).write_text(_card(meta, metrics))
        if gmvae is not None:
            shutil.copyfile(gmvae, temporary / GMVAE_WEIGHTS)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            folder.rename(old)
        temporary.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def describe_cohort(units: pd.DataFrame, source: str) -> dict:
    """What a model card says of the training cohort: where it came from, its units, patients and labels."""
    return {"source": source, "units": int(len(units)), "patients": int(units["patient"].nunique()),
            "units per label": {str(k): int(v) for k, v in units["label"].value_counts().sort_index().items()}}


def label_names(units: pd.DataFrame) -> tuple[str, str]:
    """(negative, positive) label of ``units`` (:func:`~gmvae4p.classify.cv.unit_table`)."""
    first = units.drop_duplicates("y").set_index("y")["label"]
    return str(first.loc[0]), str(first.loc[1])


@dataclasses.dataclass
class SavedModel:
    """A loaded bundle: the model, its training genes (``genes``) and their median log-CPM (``medians``), the labels
    (negative, positive) and everything ``model.json`` holds (``meta``)."""

    model: GMVAE4P
    genes: pd.Index
    medians: np.ndarray
    labels: tuple[str, str]
    meta: dict
    gmvae: Path | None = None
    """The bundle's ``gmvae.pt`` (stage 02's GMVAE), when it has one: the scRNA mode of new cells."""


def load(folder: str | os.PathLike, *, device: str | None = "cpu") -> SavedModel:
    """The bundle :func:`save` wrote to ``folder``."""
    folder = Path(folder)
    missing = [name for name in (WEIGHTS, META) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved GMVAE4P (no {', '.join(missing)}): stage 04 writes one "
                                f"to outputs/<run>/models/gmvae4p.")
    meta = json.loads((folder / META).read_text())
    tensors = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    arrays = {name: value.numpy() for name, value in tensors.items()}
    model = _from_state(arrays, meta, device)
    gmvae = folder / GMVAE_WEIGHTS
    return SavedModel(model, pd.Index(meta["genes"]), arrays["medians"], tuple(meta["labels"]), meta,
                      gmvae if "scrna" in meta and gmvae.is_file() else None)


def score(saved: SavedModel, path: str | os.PathLike, *, sample_key: str | None = None,
          cell_type_key: str | None = None, min_overlap: float | None = None,
          normalized: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """What ``gmvae4p predict`` and notebook 07 do: the input at ``path`` read once (:func:`read_counts`), scored by
    :func:`predict`, and for an ``.h5ad`` of cells with a model that kept its GMVAE also in the scRNA mode
    (:func:`scrna_modalities`); and the notes read on the way."""
    cells = read_cells(path, sample_key) if Path(path).suffix.lower() == ".h5ad" else None
    counts, notes = read_counts(path, genes=saved.genes, sample_key=sample_key, normalized=normalized, cells=cells)
    modalities = None
    if cells is not None and saved.gmvae is not None:
        modalities = scrna_modalities(saved, cells, cell_type_key=cell_type_key, sample_key=sample_key,
                                      min_overlap=min_overlap)
    return predict(saved, counts, min_overlap=min_overlap, normalized=normalized, modalities=modalities), notes


def read_cells(path: str | os.PathLike, sample_key: str | None) -> ad.AnnData:
    """The ``.h5ad`` of cells at ``path``, refused unless ``obs[sample_key]`` names each cell's sample."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    cells = ad.read_h5ad(path)
    if sample_key is None or sample_key not in cells.obs:
        raise InputError(f"{path}: name the obs column of each cell's sample (--sample-key); obs has "
                         f"{list(cells.obs.columns)}.")
    return cells


def read_counts(path: str | os.PathLike, *, genes: pd.Index | None = None, sample_key: str | None = None,
                normalized: bool = False, cells: ad.AnnData | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Raw counts (samples × genes) from ``path``, and what was noticed on the way (one sentence each).

    A ``.tsv``/``.txt``/``.csv`` table holds genes in rows by symbol and samples in columns (as featureCounts or a
    merged salmon table writes it) or the transpose: the side whose names match more of ``genes`` is taken as genes.
    An ``.h5ad`` of cells (``cells``: already read by :func:`read_cells`) is summed per ``obs[sample_key]`` (raw
    counts in ``layers["counts"]`` or ``X``). Counts must be non-negative integers unless ``normalized`` (already
    normalized values, taken as they are)."""
    path = Path(path)
    notes = []
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        table = _sum_cells(cells if cells is not None else read_cells(path, sample_key), sample_key)
    elif suffix in (".tsv", ".txt", ".csv"):
        separator = "," if suffix == ".csv" else "\t"
        try:
            table = pd.read_csv(path, sep=separator, index_col=0)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
            raise InputError(f"{path} could not be read as a table: {err}.") from err
        with open(path, newline="") as handle:  # pandas renames repeated column names (A, A.1): keep them as given
            table.columns = next(csv.reader(handle, delimiter=separator))[1:]
        table = _orient(table, genes, notes)
    else:
        raise InputError(f"{path}: unknown format {suffix!r}; give a .tsv, .txt or .csv count table or an .h5ad.")
    if table.empty or table.shape[1] == 0:
        raise InputError(f"{path} holds no samples or no genes.")
    table.columns = table.columns.astype(str)
    numeric = table.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().to_numpy().any():
        bad = numeric.columns[numeric.isna().any()][0]
        raise InputError(f"{path}: gene {bad!r} has values that are not numbers (or are missing).")
    values = numeric.to_numpy(dtype=np.float64)
    if not normalized and ((values < 0).any() or not np.allclose(values, np.round(values))):
        raise InputError(f"{path} holds negative or non-integer values, not raw counts (TPM or log values?): give "
                         f"raw counts, or pass --normalized to score them as they are.")
    duplicated = numeric.columns.duplicated(keep=False)
    if duplicated.any():
        notes.append(f"{len(set(numeric.columns[duplicated]))} gene symbols appear more than once; their rows were "
                     f"summed.")
        numeric = numeric.T.groupby(level=0, sort=False).sum().T
    return numeric, notes


def predict(saved: SavedModel, counts: pd.DataFrame, *, min_overlap: float | None = None,
            normalized: bool = False, modalities: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per sample (rows of ``counts``): the probability of the positive label as cross-validation scored it and
    calibrated (the stack's temperature: read this one as a probability), the label called at the saved threshold
    (the same for both), each learner's probability, the program score, the modality network's fusion weights and
    the share of the model's genes found in the input; with the samples' single-cell ``modalities``
    (:func:`scrna_modalities`), also the scRNA mode's (``probability_scrna``, ``probability_scrna_calibrated``)."""
    samples, found = bulk_samples(saved, counts, min_overlap=min_overlap, normalized=normalized)
    rows = np.arange(samples.n_obs)
    predicted = saved.model.predict(samples, rows)
    negative, positive = saved.labels
    out = pd.DataFrame({"probability": predicted.probability, "probability_calibrated": predicted.calibrated},
                       index=samples.obs_names)
    if modalities is not None:
        for name, values in modalities.items():
            samples.obsm[name] = values.loc[samples.obs_names].to_numpy()
        scrna = saved.model.predict(samples, rows, use_true=True)
        out["probability_scrna"], out["probability_scrna_calibrated"] = scrna.probability, scrna.calibrated
    out["predicted_label"] = np.where(out["probability"] > saved.meta["threshold"], positive, negative)
    out = out.join(predicted.learners.add_prefix("probability_"))
    program = saved.model.program
    if program is not None:
        out["program_score"] = program.score(np.asarray(samples.X), rows)
    out = out.join(predicted.fusion_weights.add_prefix("fusion_weight_"))
    out["genes_found"] = found
    return out.rename_axis("sample").reset_index()


def bulk_samples(saved: SavedModel, counts: pd.DataFrame, *, min_overlap: float | None = None,
                 normalized: bool = False) -> tuple[ad.AnnData, float]:
    """``counts`` (samples × genes) on the model's genes as log-CPM (``normalized``: taken as they are), a missing
    gene at its training median; and the share of the model's genes found."""
    min_overlap = saved.meta["min_overlap"] if min_overlap is None else min_overlap
    if not 0 < min_overlap <= 1:
        raise InputError(f"--min-overlap must be a share in (0, 1], not {min_overlap!r}.")
    position = match_genes(saved.genes, counts.columns)
    found = float((position >= 0).mean())
    if found < min_overlap:
        raise InputError(f"the input has {found:.0%} of the model's {len(saved.genes)} genes, below the minimum "
                         f"overlap {min_overlap:.0%} (--min-overlap).")
    present = position >= 0
    matched = counts.to_numpy(dtype=np.float64)[:, position[present]]
    x = np.tile(saved.medians.astype(np.float32), (len(counts), 1))
    x[:, present] = matched.astype(np.float32) if normalized else log_cpm(matched)
    samples = ad.AnnData(X=x, obs=pd.DataFrame({"unit": counts.index.astype(str), keys.KIND: keys.WHOLE},
                                               index=counts.index.astype(str)),
                         var=pd.DataFrame(index=saved.genes))
    return samples, found


def scrna_modalities(saved: SavedModel, cells: ad.AnnData, *, sample_key: str,
                     cell_type_key: str | None = None, min_overlap: float | None = None) -> dict[str, pd.DataFrame]:
    """Proportions, states and communication (one row per sample of ``obs[sample_key]``, columns as the training
    pseudobulk's) of the raw counts of new ``cells`` (:func:`read_cells`). Stage 02's GMVAE embeds the cells;
    a cell's type is its ``obs[cell_type_key]`` where that names a training type, else the GMVAE's call; a gene the
    cells lack counts as unexpressed, and below ``min_overlap`` of the GMVAE's genes the cells are refused."""
    from ..gmvae.model import GMVAE  # torch-only until here: bulk prediction never loads the GMVAE

    if saved.gmvae is None:
        raise InputError("this model was saved without its GMVAE (gmvae.pt), so it scores bulk counts only.")
    spec = saved.meta["scrna"]
    if cell_type_key is not None and cell_type_key not in cells.obs:
        raise InputError(f"the cells' obs has no column {cell_type_key!r} (--cell-type-key); it has "
                         f"{list(cells.obs.columns)}.")
    counts = sp.csr_matrix(cells.layers["counts"] if "counts" in cells.layers else cells.X, dtype=np.float32)
    if (counts.data < 0).any() or not np.allclose(counts.data, np.round(counts.data)):
        raise InputError("the cells hold negative or non-integer values, not raw counts: the scRNA mode needs them.")
    pairs = pd.DataFrame(spec["ligand_receptor_pairs"])
    gmvae_genes = torch.load(saved.gmvae, map_location="cpu", weights_only=True)["genes"]
    subunits = {g for name in pd.concat([pairs["ligand"], pairs["receptor"]]) for g in name.split("_")}
    needed = pd.Index(list(dict.fromkeys([*gmvae_genes, *sorted(subunits)])))
    position = match_genes(needed, cells.var_names)
    found = float((position[:len(gmvae_genes)] >= 0).mean())
    floor = saved.meta["min_overlap"] if min_overlap is None else min_overlap
    if found < floor:
        raise InputError(f"the cells have {found:.0%} of the GMVAE's {len(gmvae_genes)} genes, below the minimum "
                         f"overlap {floor:.0%} (--min-overlap).")
    others = np.setdiff1d(np.arange(cells.n_vars), position[position >= 0])  # kept: a cell's library is all its genes
    matched = counts[:, np.maximum(position, 0)].multiply((position >= 0)[None, :].astype(np.float32))
    work = ad.AnnData(obs=pd.DataFrame({"sample": cells.obs[sample_key].astype(str).to_numpy(),
                                        "cell_type": cells.obs[cell_type_key].astype(str).to_numpy()
                                        if cell_type_key else None}, index=cells.obs_names),
                      var=pd.DataFrame(index=[*needed, *[f"other:{g}" for g in cells.var_names[others]]]),
                      layers={keys.COUNTS: sp.hstack([matched, counts[:, others]], format="csr")},
                      uns={keys.UNS: {"columns": {"patient": "sample", "cell_type": "cell_type"}}})
    GMVAE.load(saved.gmvae, work).embed(work, device="cpu")
    annotated = work.obs["cell_type"].astype(str)
    types = annotated.where(annotated.isin(spec["cell_types"]), work.obs[keys.GMVAE_CELL_TYPE].astype(str))
    codes = pd.Categorical(types, categories=spec["cell_types"]).codes.astype(np.int64)
    names, sample_codes = np.unique(work.obs["sample"].to_numpy(), return_inverse=True)
    whole = sp.csr_matrix((np.ones(work.n_obs, dtype=np.float32), (sample_codes, np.arange(work.n_obs))),
                          shape=(len(names), work.n_obs))  # one whole-sample row per sample, as stage 03's
    plan = MixturePlan(weights=whole,
                       obs=pd.DataFrame({"unit": names, keys.KIND: keys.WHOLE}, index=names),
                       cell_types=list(spec["cell_types"]), cell_type_codes=codes)
    state_values, state_names = states(work, plan)
    communication_values, communication_names = communication(work, plan, pairs)
    if state_names != spec["state_features"] or communication_names != spec["communication_features"]:
        raise InputError("the cells' states or communication features differ from the training cohort's.")
    drawn = plan.cells_per_type
    return {keys.PROPORTIONS: pd.DataFrame(drawn / np.maximum(drawn.sum(1, keepdims=True), 1), index=names,
                                           columns=spec["cell_types"]),
            keys.STATES: pd.DataFrame(state_values, index=names),
            keys.COMMUNICATION: pd.DataFrame(communication_values, index=names)}


def match_genes(model_genes: pd.Index, input_genes: pd.Index) -> np.ndarray:
    """For each model gene, its column in ``input_genes`` (−1: not found): by exact name, else ignoring case and an
    Ensembl version suffix (``ENSG….12``) where that names one input gene only."""
    first = {}
    for column, gene in enumerate(map(str, input_genes)):  # a repeated symbol: its first column (summed later)
        first.setdefault(gene, column)
    exact = np.array([first.get(str(gene), -1) for gene in model_genes], dtype=np.int64)
    loose = pd.Series(np.arange(len(input_genes)), index=[_loose(g) for g in input_genes])
    unique = loose[~loose.index.duplicated(keep=False)]
    for i in np.flatnonzero(exact < 0):
        exact[i] = unique.get(_loose(model_genes[i]), -1)
    return exact


def _loose(gene) -> str:
    return re.sub(r"^(ENS[A-Z]*G\d+)\.\d+$", r"\1", str(gene), flags=re.IGNORECASE).upper()


def _orient(table: pd.DataFrame, genes: pd.Index | None, notes: list[str]) -> pd.DataFrame:
    """Samples × genes: genes are the side whose names match more of the model's ``genes`` (rows if none given)."""
    if genes is None:
        return table.T
    in_rows = (match_genes(genes, table.index) >= 0).sum()
    in_columns = (match_genes(genes, table.columns) >= 0).sum()
    if in_columns > in_rows:
        notes.append("genes are in the columns of this table (samples in rows).")
        return table
    return table.T


def _sum_cells(cells: ad.AnnData, sample_key: str) -> pd.DataFrame:
    counts = cells.layers["counts"] if "counts" in cells.layers else cells.X
    codes, names = pd.factorize(cells.obs[sample_key].astype(str))
    indicator = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(names), len(codes)))
    summed = indicator @ counts
    summed = summed.toarray() if sp.issparse(summed) else np.asarray(summed)
    return pd.DataFrame(summed, index=names, columns=cells.var_names.astype(str))


def _state(model: GMVAE4P) -> tuple[dict[str, np.ndarray], dict]:
    learners = model.learners
    if learners is None:
        raise RuntimeError("save needs a fitted GMVAE4P.")
    arrays = {}  # the config's own fields only: stage 04 passes its larger ClassifySection
    meta = {"config": {f.name: getattr(model.config, f.name) for f in dataclasses.fields(ClassifierConfig)}}
    meta.update(n_top_genes=model.n_top_genes, modalities=list(model.modalities), sources=model.sources,
                seed=model.seed, learners=list(learners.names),
                stack={str(use_true): {"weights": s.weights.tolist(), "scale": s.scale.tolist(),
                                       "scaled_on": s.scaled_on, "held_out_auc": s.held_out_auc,
                                       "temperature": s.temperature}
                       for use_true, s in model.stack.items()})
    if learners.linear is not None:
        genes, pipeline = learners.linear
        scaler, regression = pipeline[0], pipeline[-1]
        arrays.update({"linear.genes": genes, "linear.mean": scaler.mean_, "linear.scale": scaler.scale_,
                       "linear.coef": regression.coef_, "linear.intercept": regression.intercept_})
    if learners.program is not None:
        program, regression = learners.program
        arrays.update(_program_arrays("program", program))
        arrays.update({"program.coef": regression.coef_, "program.intercept": regression.intercept_})
    network = learners.network
    if network is not None:
        features = network.features
        meta["network"] = {"blocks": list(features.columns), "widths": {b: features.width(b) for b in features.columns},
                           "n_top_interactions": network.n_top_interactions}
        for block in features.columns:
            arrays[f"network.{block}.columns"] = features.columns[block]
            if block in features.mean:
                arrays[f"network.{block}.mean"] = features.mean[block]
                arrays[f"network.{block}.scale"] = features.scale[block]
        if features.program is not None:
            arrays.update(_program_arrays("network.program", features.program))
        arrays.update({f"network.module.{k}": v.detach().cpu().numpy() for k, v in network.module.state_dict().items()})
    return arrays, meta


def _from_state(arrays: dict[str, np.ndarray], meta: dict, device: str | None) -> GMVAE4P:
    config = ClassifierConfig(**meta["config"])
    model = GMVAE4P(config, n_top_genes=meta["n_top_genes"], modalities=tuple(meta["modalities"]),
                    sources=meta["sources"], device=device, seed=meta["seed"])
    linear = program = network = None
    if "linear.coef" in arrays:
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = arrays["linear.mean"], arrays["linear.scale"]
        scaler.var_, scaler.n_features_in_, scaler.n_samples_seen_ = scaler.scale_ ** 2, len(scaler.mean_), 1
        linear = arrays["linear.genes"], make_pipeline(scaler, _regression(arrays, "linear"))
    if "program.coef" in arrays:
        program = _program(arrays, "program"), _regression(arrays, "program")
    if "network" in meta:
        spec = meta["network"]
        network = ModalityNetwork(config, n_top_genes=meta["n_top_genes"],
                                  n_top_interactions=spec["n_top_interactions"], modalities=tuple(meta["modalities"]),
                                  sources=meta["sources"], device=device, seed=meta["seed"])
        blocks = spec["blocks"]
        network.features = FoldFeatures(
            {b: arrays[f"network.{b}.columns"] for b in blocks},
            {b: arrays[f"network.{b}.mean"] for b in blocks if f"network.{b}.mean" in arrays},
            {b: arrays[f"network.{b}.scale"] for b in blocks if f"network.{b}.scale" in arrays},
            meta["sources"], _program(arrays, "network.program") if "network.program.genes" in arrays else None)
        network.module = GMVAE4PModule(spec["widths"][BULK], {m: spec["widths"][m] for m in meta["modalities"]},
                                       fusion=config.fusion, hidden_dim=config.hidden_dim, embed_dim=config.embed_dim,
                                       dropout=config.dropout)
        prefix = "network.module."
        network.module.load_state_dict({k[len(prefix):]: torch.as_tensor(v) for k, v in arrays.items()
                                        if k.startswith(prefix)})
        network.module.to(network.device).eval()
    model.learners = _Learners(tuple(meta["learners"]), linear, program, network)
    model.stack = {use_true == "True": Stack(tuple(meta["learners"]), np.asarray(s["weights"]), np.asarray(s["scale"]),
                                             s["scaled_on"], s["held_out_auc"], s["temperature"])
                   for use_true, s in meta["stack"].items()}
    return model


def _program_arrays(prefix: str, program: LearnedProgram) -> dict[str, np.ndarray]:
    return {f"{prefix}.{f.name}": getattr(program, f.name) for f in dataclasses.fields(LearnedProgram)}


def _program(arrays: dict[str, np.ndarray], prefix: str) -> LearnedProgram:
    return LearnedProgram(**{f.name: arrays[f"{prefix}.{f.name}"] for f in dataclasses.fields(LearnedProgram)})


def _regression(arrays: dict[str, np.ndarray], prefix: str) -> LogisticRegression:
    regression = LogisticRegression()
    regression.coef_, regression.intercept_ = arrays[f"{prefix}.coef"], arrays[f"{prefix}.intercept"]
    regression.classes_, regression.n_features_in_ = np.array([0, 1]), regression.coef_.shape[1]
    return regression


def _card(meta: dict, metrics: pd.DataFrame | None) -> str:
    cohort, (negative, positive) = meta["cohort"], meta["labels"]
    stack = meta["stack"]["False"]
    lines = ["# GMVAE4P model card", "",
             f"Classifies a sample as **{positive}** against **{negative}** from its bulk RNA-seq counts.", "",
             "## Training cohort", ""]
    lines += [f"- {key}: " + (", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value))
              for key, value in cohort.items()]
    lines += ["", "## Inputs", "",
              f"- {len(meta['genes'])} genes, matched by symbol (case and Ensembl version ignored where unambiguous); "
              f"at least {meta['min_overlap']:.0%} must be found, a missing one takes its training median log-CPM.",
              "- raw counts per sample (log-CPM over the model's genes is computed here).", "",
              "## Model", "",
              f"- learners: {', '.join(meta['learners'])}; stack weights from bulk "
              + ", ".join(f"{n} {w:.2f}" for n, w in zip(meta["learners"], stack["weights"]))
              + ", given cells (scRNA mode) "
              + ", ".join(f"{n} {w:.2f}" for n, w in zip(meta["learners"], meta["stack"]["True"]["weights"]))
              + f" ({stack['scaled_on']}; a learner that only repeats another's input from bulk weighs 0 there); "
              f"positive when the probability exceeds {meta['threshold']}.",
              f"- `probability_calibrated`: the same ranking and calls, its logit times a temperature fitted on the "
              f"held-out training units ({stack['temperature']:.2f}); read it as a probability.",
              "- settings: `model.json` (`config`).", ""]
    if metrics is not None and len(metrics):
        lines += ["## Cross-validated performance on the training cohort (patient-grouped, out of fold)", "",
                  "| method | AUC [95 % CI over patients] | balanced accuracy |", "|---|---|---|"]
        for row in metrics.itertuples():
            lines.append(f"| {row.method} | {row.auc:.3f} [{row.auc_low:.2f}, {row.auc_high:.2f}] | "
                         f"{getattr(row, 'balanced_accuracy', float('nan')):.2f} |")
        lines.append("")
    lines += ["## Versions", "", *[f"- {k} {v}" for k, v in meta["versions"].items()], "",
              "scRNA mode for new cells: " + ("an `.h5ad` of cells is also scored with their own modalities, made "
                                                "with the GMVAE kept beside this card (`gmvae.pt`)."
                                                if "scrna" in meta else "not available (saved without its GMVAE)."),
              ""]
    return "\n".join(lines)
