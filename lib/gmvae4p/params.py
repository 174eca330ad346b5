"""Parameters files: read, check names and types, hand each notebook its sections.

A parameters file is YAML with top-level ``run_name`` and ``seed`` and one mapping per section. Each section
is a dataclass below; its field defaults are the embedded default cohort (``parameters/demo.yaml``), and the
notebooks' ``parameters`` cells hold the same literals so they run as is in JupyterLab. An unknown or misspelled
name, or a value of the wrong type, is an error, not a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path

import yaml

from .classify.config import METHODS, N_TOP_GENES, N_TOP_INTERACTIONS, ClassifierConfig
from .gmvae.config import ModuleConfig, TrainConfig
from .pseudobulk import N_CELLS, N_SAMPLES, PROPORTIONS, SPARSE_PROB


class ParameterError(ValueError):
    """A parameters file or section that cannot be used as it is."""


@dataclasses.dataclass
class DataSection:
    """Where the cohort comes from and which ``obs`` columns play which role."""

    path: str | None = None
    """An ``.h5ad`` of raw counts; ``None`` simulates the cohort described by the ``simulate`` section."""
    counts_layer: str | None = None
    """Layer holding raw counts; ``None`` means ``X``."""
    patient_key: str = "ind_cov"
    cell_type_key: str = "ct_cov"
    label_key: str | None = "disease_cov"
    """``None`` runs the cell-level stages only (a cohort without a phenotype)."""
    sample_key: str | None = None
    """Set when a patient has several samples (e.g. control and stimulated): samples become the units."""
    batch_key: str | None = "batch_cov"


@dataclasses.dataclass
class SimulateSection:
    """The simulated cohort (:func:`gmvae4p.data.simulate_cohort`); used only when ``data.path`` is ``None``."""

    n_patients: int = 60
    n_cells: int = 12_000
    n_genes: int = 2_000
    n_cell_types: int = 8
    disease_fraction: float = 0.5
    effect_size: float = 0.6
    activity_sd: float = 0.6
    n_disease_genes: int = 40
    disease_cell_types: list[str] = dataclasses.field(default_factory=lambda: ["CD14 Mono", "B", "CD4 T"])
    second_program_cell_types: list[str] = dataclasses.field(default_factory=list)
    composition_shift: float = 0.3
    composition_shift_cell_types: list[str] = dataclasses.field(default_factory=lambda: ["CD14 Mono"])
    composition_concentration: float = 30.0
    n_marker_genes: int = 25
    marker_lfc: float = 2.0
    donor_effect_sd: float = 0.15
    n_batches: int = 2
    batch_effect_sd: float = 0.1
    library_size: float = 2_000.0
    library_size_sd: float = 0.35
    dispersion: float = 3.0
    zero_inflation: float = 0.0
    low_quality_fraction: float = 0.02
    n_ligand_receptor_genes: int = 200


@dataclasses.dataclass
class PreprocessSection:
    """Quality control, normalization and highly variable genes (:mod:`gmvae4p.preprocess`)."""

    min_genes: int = 100
    min_cells: int = 3
    max_pct_mito: float | None = 20.0
    mito_prefix: str = "MT-"
    target_sum: float = 10_000.0
    n_top_genes: int | None = 1_000
    """``None`` keeps every gene as highly variable."""


@dataclasses.dataclass
class GMVAESection(TrainConfig, ModuleConfig):
    """The GMVAE (stage 02): architecture (:class:`~gmvae4p.gmvae.config.ModuleConfig`), optimization
    (:class:`~gmvae4p.gmvae.config.TrainConfig`) and how the run is placed and launched."""

    use_highly_variable: bool = True
    """Model the highly variable genes only (all genes when False or when none are flagged)."""
    validation_fraction: float = 0.2
    """Share of patients held out of training, for held-out accuracy (drawn with the run's seed)."""
    n_processes: int | None = 1
    """torchrun ranks (one per GPU); None trains inside the notebook's own process."""
    device: str | None = None
    """``cpu`` or ``cuda``; None picks CUDA when available."""
    mse_for_ablation: bool = True
    """Also train a GMVAE with ``likelihood: mse`` (the other settings the same) for stage 05's row "GMVAE trained
    with mse"; its z-score goes to ``obsm["X_gmvae_mse_zscore"]``. Ignored when ``likelihood`` is ``mse``; false
    saves that training when stage 05 will not run."""

    def __post_init__(self):
        ModuleConfig.__post_init__(self)
        TrainConfig.__post_init__(self)
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), not {self.validation_fraction!r}.")
        if self.n_processes is not None and self.n_processes < 1:
            raise ValueError(f"n_processes must be at least 1 or null, not {self.n_processes!r}.")


@dataclasses.dataclass
class PseudobulkSection:
    """TAPE-style pseudobulk samples and their modalities (stage 03, :func:`gmvae4p.modalities.make_pseudobulk`)."""

    n_samples: int = N_SAMPLES
    """Mixtures per unit (plus one whole-unit sample)."""
    n_cells: int = N_CELLS
    """Cells per mixture, drawn with replacement from the unit's own cells."""
    proportions: str = PROPORTIONS[0]
    """A mixture's cell-type proportions: ``unit`` (the unit's own) or ``dirichlet`` (TAPE's random ones; see
    :data:`gmvae4p.pseudobulk.PROPORTIONS`)."""
    sparse_prob: float = SPARSE_PROB
    """With ``proportions: dirichlet``, ``int(K · sparse_prob)`` of a unit's K cell types are left out of each
    mixture (never all)."""
    resource: str = "consensus"
    """liana's ligand–receptor resource for the communication modality."""

    def __post_init__(self):
        for name in ("n_samples", "n_cells"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}.")
        if not 0 <= self.sparse_prob < 1:
            raise ValueError(f"sparse_prob must be in [0, 1), not {self.sparse_prob!r}.")
        if self.proportions not in PROPORTIONS:
            raise ValueError(f"proportions must be one of {list(PROPORTIONS)}, not {self.proportions!r}.")


@dataclasses.dataclass
class ClassifySection(ClassifierConfig):
    """The classifier stage (stage 04): GMVAE4P (:class:`~gmvae4p.classify.config.ClassifierConfig`), the methods
    compared and how they are evaluated (:mod:`gmvae4p.classify.evaluate`)."""

    positive_label: str | None = None
    """The label scored as positive; ``None`` takes the simulator's (real data must name it)."""
    n_folds: int = 5
    """Outer folds, grouped by patient, stratified by label and (with ``data.batch_key``) batch."""
    validation_fraction: float = 0.2
    """Share of a training fold's patients held out for early stopping."""
    n_top_genes: int = N_TOP_GENES
    """Bulk genes the baselines (and GMVAE4P with ``bulk_input: genes``) keep per fold: the most variable over the
    fold's training units."""
    n_top_interactions: int = N_TOP_INTERACTIONS
    """Communication features GMVAE4P keeps per fold: the most variable over the fold's training units."""
    methods: list[str] = dataclasses.field(default_factory=lambda: list(METHODS))
    small_cohort_sizes: list[int] = dataclasses.field(default_factory=lambda: [10, 20, 30])
    """Table 2: training units drawn from each fold's training units."""
    small_cohort_repeats: int = 2
    small_cohort_methods: list[str] = dataclasses.field(default_factory=lambda: ["gmvae4p", "logistic_regression"])
    null_permutations: int = 19
    """The permutation null: every method refitted on this many permutations of the labels across patients (Table
    1's p-value and null range); the logistic regressions take this many, the costly methods
    ``null_permutations_costly``. 0 turns the null off."""
    null_permutations_costly: int = 4
    """Permutations for the methods that take far longer to refit: the tree ensembles and the torch networks
    (GMVAE4P among them; :data:`~gmvae4p.classify.evaluate.COSTLY_METHODS`)."""
    device: str | None = "cpu"
    """``cpu``, ``cuda``, or None: CUDA when available. The CPU by default: the fold networks are small, a worker
    trains them on its share of the cores about as fast as on a GPU, and holds no CUDA context (about 0.8 GB each
    on a GPU machine; ``BENCHMARKS.md``)."""
    n_jobs: int = 2
    """Worker processes that train folds side by side (GMVAE4P and the cell-level networks, in every table; see
    :mod:`gmvae4p.classify.workers`); 1 trains them in the notebook's process. Each worker's torch takes its share of
    the cores; on one GPU, several workers keep it busy (``BENCHMARKS.md``)."""

    def __post_init__(self):
        ClassifierConfig.__post_init__(self)
        for name in ("n_jobs", "n_top_genes", "n_top_interactions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}.")
        unknown = [m for m in [*self.methods, *self.small_cohort_methods] if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown method(s) {unknown}; known: {list(METHODS)}.")
        if not 2 <= self.n_folds:
            raise ValueError(f"n_folds must be at least 2, not {self.n_folds!r}.")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), not {self.validation_fraction!r}.")
        if self.null_permutations < 0 or self.null_permutations_costly < 0:
            raise ValueError("null_permutations and null_permutations_costly must not be negative.")
        if self.small_cohort_repeats < 1:
            raise ValueError(f"small_cohort_repeats must be at least 1, not {self.small_cohort_repeats!r}.")


SECTIONS: dict[str, type] = {
    "data": DataSection,
    "simulate": SimulateSection,
    "preprocess": PreprocessSection,
    "gmvae": GMVAESection,
    "pseudobulk": PseudobulkSection,
    "classify": ClassifySection,
}
TOP_LEVEL: dict[str, type] = {"run_name": str, "seed": int}


@dataclasses.dataclass
class Parameters:
    """A checked parameters file."""

    run_name: str
    seed: int
    sections: dict[str, object]
    source: Path | None = None

    def notebook_parameters(self, names: typing.Iterable[str]) -> dict[str, object]:
        """The values to inject into a notebook whose ``parameters`` cell declares ``names``."""
        available = {"seed": self.seed, **{k: dataclasses.asdict(v) for k, v in self.sections.items()},
                     "positive_label": self.sections["classify"].positive_label}  # colours labels before stage 04
        return {name: available[name] for name in names if name in available}

    def to_dict(self) -> dict[str, object]:
        return {"run_name": self.run_name, "seed": self.seed,
                **{k: dataclasses.asdict(v) for k, v in self.sections.items()}}


def load(path: str | Path) -> Parameters:
    """Read and check a parameters file; relative data paths are taken from the current folder."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"parameters file {path} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParameterError(f"parameters file {path} is not valid YAML ({err}).") from err
    if not isinstance(raw, dict):
        raise ParameterError(f"parameters file {path} must hold a mapping of names to values.")
    params = from_mapping(raw, where=str(path), default_run_name=path.stem)
    params.source = path
    data_path = params.sections["data"].path
    if data_path is not None:
        resolved = Path(data_path).expanduser().resolve()
        if not resolved.is_file():
            raise ParameterError(f"{path}: data.path {data_path} does not exist (relative paths are taken from "
                                 f"the folder you run from, {Path.cwd()}).")
        params.sections["data"].path = str(resolved)
    return params


def from_mapping(raw: dict, *, where: str = "parameters", default_run_name: str = "run") -> Parameters:
    """Check a mapping of top-level names and sections; missing names take their defaults."""
    _reject_unknown(raw, [*TOP_LEVEL, *SECTIONS], where)
    top = {"run_name": default_run_name, "seed": 0}
    for name, kind in TOP_LEVEL.items():
        if name in raw:
            top[name] = _checked(raw[name], kind, f"{where}: {name}")
    sections = {name: check_section(name, raw.get(name) or {}, where=where) for name in SECTIONS}
    if sections["data"].path is not None and raw.get("simulate"):
        raise ParameterError(f"{where}: the simulate section applies only when data.path is null, and data.path is "
                             f"{sections['data'].path}: remove the section or set data.path to null.")
    return Parameters(run_name=top["run_name"], seed=top["seed"], sections=sections)


def check_section(name: str, values: dict, *, where: str = "parameters"):
    """Check one section's mapping (a notebook calls this on its ``parameters`` cell) and return its dataclass."""
    if name not in SECTIONS:
        raise ParameterError(f"{where}: there is no parameters section {name!r}; sections are {list(SECTIONS)}.")
    if not isinstance(values, dict):
        raise ParameterError(f"{where}: section {name!r} must be a mapping of names to values.")
    cls = SECTIONS[name]
    hints = typing.get_type_hints(cls)
    _reject_unknown(values, list(hints), f"{where}: {name}")
    checked = {key: _checked(value, hints[key], f"{where}: {name}.{key}") for key, value in values.items()}
    try:
        return cls(**checked)
    except ValueError as err:  # a value of the right type outside its range
        raise ParameterError(f"{where}: {name}.{err}") from None


def check_sections(**sections: dict) -> None:
    """Check a notebook's section dictionaries (``check_sections(data=data, preprocess=preprocess)``)."""
    for name, values in sections.items():
        check_section(name, values, where="notebook parameters")


def _reject_unknown(values: dict, known: list[str], where: str) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known names are {known}"
            raise ParameterError(f"{where}: unknown parameter {key!r}{hint}.")


def _checked(value, kind, where: str):
    """``value`` if it has type ``kind`` (ints are accepted for floats), else a ParameterError."""
    if _matches(value, kind):
        return float(value) if kind is float else value
    raise ParameterError(f"{where} must be {_describe(kind)}, not {value!r}.")


def _matches(value, kind) -> bool:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(kind))
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(kind))
    if origin is list:
        return f"a list of {_describe(typing.get_args(kind)[0])}"
    return {type(None): "null", int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, kind.__name__)
