"""GMVAE4P on an AnnData of pseudobulk samples (stage 03's ``pseudobulk.h5ad``): fit on some units, predict others.

GMVAE4P reads bulk expression only. Three learners read it (:data:`~gmvae4p.classify.config.LEARNERS`): a regularized
linear model over the most variable genes, the score of a disease program learned from the training units
(:mod:`gmvae4p.classify.program`), and the modality network (:class:`ModalityNetwork`: bulk → predicted
proportions, states and communication with their variances → certainty-weighted fusion → classifier, the true
modalities as auxiliary targets). They are combined by the mean of their logits, each scaled by its spread on training
units it was not fitted on; from bulk, a network that reads the program's score is left out of that mean
(:mod:`gmvae4p.classify.stack`).

What is fitted — genes and interactions kept, the program, every standardization, the stack — is fitted on training
units only (:class:`FoldFeatures`); the validation units drive the network's early stopping; any other unit is only
ever predicted.
"""

from __future__ import annotations

import dataclasses
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from .. import keys
from .config import N_TOP_GENES, N_TOP_INTERACTIONS, ClassifierConfig
from .module import GMVAE4PModule
from .cv import FoldError, most_variable, patient_folds
from .baselines import BASELINES
from .program import LearnedProgram
from .stack import Stack, equal_stack, fit_stack, single_stack
from .training import fit

BULK = "bulk"
MODALITIES = (keys.PROPORTIONS, keys.STATES, keys.COMMUNICATION)
"""The auxiliary modalities, in the order of the fusion weights."""


def feature_block(samples: ad.AnnData, name: str) -> np.ndarray:
    """The samples × features matrix of ``bulk`` (``X``, log-CPM) or of a modality in ``obsm`` (float32)."""
    if name == BULK:
        return np.asarray(samples.X, dtype=np.float32)
    if name not in samples.obsm:
        raise KeyError(f"samples.obsm[{name!r}] is missing: run stage 03 (pseudobulk) with this output_dir.")
    value = samples.obsm[name]
    return np.asarray(value.to_numpy() if isinstance(value, pd.DataFrame) else value, dtype=np.float32)


@dataclasses.dataclass
class FoldFeatures:
    """Columns kept and their standardization, all fitted on training rows; ``sources`` names where a block is read
    when not under its own name (an ablation reads the states from ``states_expression``); ``program``, when set,
    replaces the bulk block by its one score."""

    columns: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    program: LearnedProgram | None = None

    @classmethod
    def fit(cls, samples: ad.AnnData, rows: np.ndarray, *, blocks: tuple[str, ...], n_top_genes: int,
            n_top_interactions: int, sources: dict[str, str] | None = None,
            program: LearnedProgram | None = None) -> FoldFeatures:
        """Bulk keeps its ``n_top_genes`` and communication its ``n_top_interactions`` most variable columns over
        ``rows``; every kept column is centred and scaled by its mean and SD over ``rows`` (NaN ignored). With a
        ``program`` (fitted on the same rows) bulk is its score instead."""
        top = {BULK: n_top_genes, keys.COMMUNICATION: n_top_interactions}
        sources = dict(sources or {})
        columns, mean, scale = {}, {}, {}
        for name in blocks:
            if name == BULK and program is not None:  # the program standardizes its genes itself
                columns[name] = program.genes
                continue
            values = feature_block(samples, sources.get(name, name))
            kept = most_variable(values, rows, top[name]) if name in top else np.arange(values.shape[1])
            train = values[np.ix_(rows, kept)]
            with warnings.catch_warnings():  # a type never drawn in training rows: an all-NaN column
                warnings.simplefilter("ignore", RuntimeWarning)
                centre, spread = np.nanmean(train, 0), np.nanstd(train, 0)
            columns[name] = kept
            mean[name] = np.nan_to_num(centre)
            scale[name] = np.where(np.nan_to_num(spread) > 1e-6, spread, 1.0).astype(np.float32)
        return cls(columns, mean, scale, sources, program)

    def width(self, name: str) -> int:
        """Features of block ``name`` as transformed."""
        return 1 if name == BULK and self.program is not None else len(self.columns[name])

    def transform(self, samples: ad.AnnData, rows: np.ndarray,
                  blocks: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Standardized ``blocks`` (default: all) of ``rows``; NaN (a cell type not drawn) stays NaN."""
        return {name: self.program.score(feature_block(samples, BULK), rows)[:, None]
                if name == BULK and self.program is not None
                else (feature_block(samples, self.sources.get(name, name))[np.ix_(rows, self.columns[name])]
                      - self.mean[name]) / self.scale[name]
                for name in blocks or self.columns}


@dataclasses.dataclass
class Predictions:
    """Per sample: ``probability`` of the positive label, the modality network's ``fusion_weights`` (a DataFrame,
    one column per modality) and the ``fused`` representation its classifier read (samples × embed_dim; no columns
    without the network); for GMVAE4P also each learner's own probability (``learners``, one column per learner) and
    the ``calibrated`` probability."""

    probability: np.ndarray
    fusion_weights: pd.DataFrame
    fused: np.ndarray
    learners: pd.DataFrame | None = None
    calibrated: np.ndarray | None = None
    """GMVAE4P's probability with the stack's temperature (:attr:`~gmvae4p.classify.stack.Stack.temperature`)."""


class ModalityNetwork:
    """GMVAE4P's modality network (:class:`~gmvae4p.classify.module.GMVAE4PModule`) on pseudobulk samples.

    Parameters
    ----------
    config
        Architecture, loss weights, optimization, and what the bulk encoder reads (``bulk_input``: the learned
        disease program's score, or the ``n_top_genes`` most variable genes).
    n_top_genes, n_top_interactions
        Bulk genes (with ``bulk_input: genes``) and communication features kept (most variable over the training
        units).
    modalities
        Auxiliary modalities used (a subset of :data:`MODALITIES`; empty: bulk straight to the classifier).
    sources
        ``obsm`` key to read a modality from when not its own name (``{"states": "states_expression"}``).
    device
        ``cpu`` or ``cuda``; ``None`` picks CUDA when available.
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig(), *, n_top_genes: int = N_TOP_GENES,
                 n_top_interactions: int = N_TOP_INTERACTIONS, modalities: tuple[str, ...] = MODALITIES,
                 sources: dict[str, str] | None = None, device: str | None = None, seed: int = 0):
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"modalities must be a subset of {list(MODALITIES)}, not {list(modalities)}.")
        self.config, self.modalities, self.sources, self.seed = config, tuple(modalities), dict(sources or {}), seed
        self.n_top_genes, self.n_top_interactions = n_top_genes, n_top_interactions
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module: GMVAE4PModule | None = None
        self.features: FoldFeatures | None = None
        self.history: list[dict] = []

    def fit(self, samples: ad.AnnData, y: np.ndarray, *, train: np.ndarray,
            validation: np.ndarray | None = None) -> ModalityNetwork:
        """Train on the sample rows ``train`` (labels ``y``, 1 = positive, one per sample of ``samples``), early
        stopping on ``validation`` rows."""
        torch.manual_seed(self.seed)
        c = self.config
        program = LearnedProgram.fit(feature_block(samples, BULK), train, samples.obs["unit"].astype(str).to_numpy(),
                                     y, n_seed_genes=c.program_seed_genes, alpha=c.program_alpha) \
            if c.bulk_input == "program" else None
        self.features = FoldFeatures.fit(samples, train, blocks=(BULK, *self.modalities),
                                         n_top_genes=self.n_top_genes, n_top_interactions=self.n_top_interactions,
                                         sources=self.sources, program=program)
        data = self._tensors(samples, train)
        labels = torch.as_tensor(y[train], dtype=torch.long, device=self.device)
        # class-balanced like the other learners, so that probability 0.5 lies between the classes on its own
        counts = torch.bincount(labels, minlength=2).clamp_min(1).float()
        class_weight = len(labels) / (2 * counts)
        dims = {m: self.features.width(m) for m in self.modalities}
        self.module = GMVAE4PModule(self.features.width(BULK), dims, fusion=c.fusion, hidden_dim=c.hidden_dim,
                                    embed_dim=c.embed_dim, dropout=c.dropout).to(self.device)

        def batch_loss(rows):
            rows = rows.to(self.device)
            bulk, modalities = data[BULK][rows], {m: data[m][rows] for m in self.modalities}
            out, true_out = self.module.forward_both(bulk, modalities)
            return self.module.loss(out, labels[rows], modalities, true_out=true_out, nll_weight=c.nll_weight,
                                    contrastive_weight=c.contrastive_weight, class_weight=class_weight)["loss"]

        validation_loss = None
        if validation is not None and len(validation):
            held = self._tensors(samples, validation, blocks=(BULK,))[BULK]
            held_labels = torch.as_tensor(y[validation], dtype=torch.long, device=self.device)
            validation_loss = lambda: torch.nn.functional.cross_entropy(self.module(held)["logits"], held_labels,
                                                                        weight=class_weight)
        self.history = fit(self.module, batch_loss, len(train), validation_loss=validation_loss, config=c,
                           seed=self.seed)
        return self

    @torch.no_grad()
    def predict(self, samples: ad.AnnData, rows: np.ndarray, *, use_true: bool = False) -> Predictions:
        """Predictions for sample rows ``rows`` from bulk expression alone, or (``use_true``, scRNA mode) with the
        samples' true modalities fed to the modality encoders."""
        if self.module is None:
            raise RuntimeError("predict needs a fitted model: call fit first.")
        data = self._tensors(samples, rows, blocks=(BULK, *self.modalities) if use_true else (BULK,))
        out = self.module(data[BULK], {m: data[m] for m in self.modalities} if use_true else None,
                          use_true=use_true)
        weights = pd.DataFrame(out["fusion_weights"].cpu().numpy(), columns=list(self.modalities),
                               index=samples.obs_names[rows])
        return Predictions(torch.softmax(out["logits"], -1)[:, 1].cpu().numpy(), weights, out["fused"].cpu().numpy())

    def _tensors(self, samples, rows, blocks=None) -> dict[str, torch.Tensor]:
        values = self.features.transform(samples, rows, blocks)
        return {name: torch.as_tensor(value, device=self.device) for name, value in values.items()}


class GMVAE4P:
    """The patient classifier: its learners (:data:`~gmvae4p.classify.config.LEARNERS`, ``config.learners``) fitted
    on the training units, combined by a stack fitted on their held-out logits: the linear and program learners'
    over ``config.stack_folds`` inner folds of the training patients, the network's on its validation units
    (:mod:`gmvae4p.classify.stack`).

    Parameters are those of :class:`ModalityNetwork`; ``n_top_genes`` is also what the linear learner keeps.
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig(), *, n_top_genes: int = N_TOP_GENES,
                 n_top_interactions: int = N_TOP_INTERACTIONS, modalities: tuple[str, ...] = MODALITIES,
                 sources: dict[str, str] | None = None, device: str | None = None, seed: int = 0):
        self.config, self.seed = config, seed
        self._network_settings = dict(n_top_genes=n_top_genes, n_top_interactions=n_top_interactions,
                                      modalities=modalities, sources=sources, device=device)
        self.n_top_genes, self.modalities, self.sources = n_top_genes, tuple(modalities), dict(sources or {})
        self.learners: _Learners | None = None
        self.stack: dict[bool, Stack] = {}
        """The stack for bulk input (``False``) and for the scRNA mode (``True``: the network reads the true
        modalities)."""

    @property
    def network(self) -> ModalityNetwork | None:
        return self.learners.network if self.learners else None

    @property
    def history(self) -> list[dict]:
        return self.network.history if self.network else []

    @property
    def program(self) -> LearnedProgram | None:
        """The disease program GMVAE4P learned (the program learner's, else the network's bulk input)."""
        if self.learners is None:
            return None
        if self.learners.program is not None:
            return self.learners.program[0]
        return self.network.features.program if self.network else None

    def fit(self, samples: ad.AnnData, y: np.ndarray, *, train: np.ndarray,
            validation: np.ndarray | None = None) -> GMVAE4P:
        """Fit on the sample rows ``train`` and ``validation`` (labels ``y``, 1 = positive, one per sample of
        ``samples``): the network trains on ``train`` and stops early on ``validation``; the other learners and
        the stack see both."""
        validation = np.asarray([] if validation is None else validation, dtype=np.int64)
        rows = np.concatenate([train, validation])
        self.learners = self._fit_learners(samples, y, train, validation, self.seed)
        names = tuple(self.config.learners)
        if len(names) == 1:  # every learner is class-balanced: a stack of one is the learner itself
            self.stack = {False: single_stack(names), True: single_stack(names)}
            return self
        # from bulk, a network that reads the program's score repeats the program learner (stack's docstring)
        left_out = {False: ("network",) if {"network", "program"} <= set(names)
                    and self.config.bulk_input == "program" else (), True: ()}
        inner = self._inner_folds(samples, y, rows)
        if inner is None:
            self.stack = {use_true: equal_stack(names, left_out[use_true]) for use_true in (False, True)}
            return self
        # held-out logits of every training row: the network's on its validation rows, the others' on inner folds
        position = {row: i for i, row in enumerate(rows)}
        held = {use_true: np.full((len(rows), len(names)), np.nan) for use_true in (False, True)}
        refitted = tuple(name for name in names if name != "network")
        for index, (inner_train, inner_validation, inner_test) in enumerate(inner):
            fitted = self._fit_learners(samples, y, inner_train, inner_validation, self.seed + 1000 * (index + 1),
                                        names=refitted)
            logits = fitted.logits(samples, inner_test)
            for use_true in held:
                held[use_true][np.ix_([position[row] for row in inner_test],
                                      [names.index(name) for name in refitted])] = logits
        if "network" in names and len(validation):
            at = [position[row] for row in validation]
            for use_true in held:
                held[use_true][at, names.index("network")] = self.learners.network_logits(samples, validation,
                                                                                         use_true=use_true)
        unit = samples.obs["unit"].astype(str).to_numpy()[rows]
        self.stack = {use_true: fit_stack(logits, y[rows], unit, names, left_out[use_true])
                      for use_true, logits in held.items()}
        return self

    @torch.no_grad()
    def predict(self, samples: ad.AnnData, rows: np.ndarray, *, use_true: bool = False) -> Predictions:
        """Predictions for sample rows ``rows`` from bulk expression alone, or (``use_true``, scRNA mode) with the
        samples' true modalities given to the network."""
        if self.learners is None:
            raise RuntimeError("GMVAE4P.predict needs a fitted model: call fit first.")
        use_true = use_true and self.learners.reads_modalities
        logits = self.learners.logits(samples, rows, use_true=use_true)
        network = self.network.predict(samples, rows, use_true=use_true) if self.network else None
        index = samples.obs_names[rows]
        learners = pd.DataFrame(1.0 / (1.0 + np.exp(-logits)), columns=list(self.config.learners), index=index)
        stack = self.stack[use_true]
        return Predictions(stack.probability(logits), network.fusion_weights if network else pd.DataFrame(index=index),
                           network.fused if network else np.zeros((len(rows), 0), dtype=np.float32), learners,
                           stack.probability(logits, calibrated=True))

    def stack_table(self) -> pd.DataFrame:
        """One row per learner: its stack weight for bulk input and for the scRNA mode, the scale its logit is
        divided by (:class:`~gmvae4p.classify.stack.Stack`), and its AUC on its held-out training units in either
        mode; the stack's temperature in either mode (the same on every row)."""
        return pd.DataFrame({"learner": list(self.config.learners), "weight": self.stack[False].weights,
                             "weight_scrna": self.stack[True].weights, "scale": self.stack[False].scale,
                             "scale_scrna": self.stack[True].scale,
                             "held_out_auc": [self.stack[False].held_out_auc.get(name, np.nan)
                                              for name in self.config.learners],
                             "held_out_auc_scrna": [self.stack[True].held_out_auc.get(name, np.nan)
                                                    for name in self.config.learners],
                             "temperature": self.stack[False].temperature,
                             "temperature_scrna": self.stack[True].temperature,
                             "scaled_on": self.stack[False].scaled_on})

    def _fit_learners(self, samples, y, train, validation, seed, names=None) -> _Learners:
        """The learners ``names`` (default: the config's) fitted on the sample rows ``train`` and ``validation``."""
        c, rows = self.config, np.concatenate([train, validation])
        names = tuple(c.learners if names is None else names)
        expression = feature_block(samples, BULK)
        linear = program = network = None
        if "linear" in names:
            genes = most_variable(expression, rows, self.n_top_genes)
            linear = genes, BASELINES["logistic_regression"][1](seed).fit(expression[np.ix_(rows, genes)], y[rows])
        if "program" in names:
            learned = LearnedProgram.fit(expression, rows, samples.obs["unit"].astype(str).to_numpy(), y,
                                         n_seed_genes=c.program_seed_genes, alpha=c.program_alpha)
            score = learned.score(expression, rows)[:, None]
            program = learned, LogisticRegression(class_weight="balanced").fit(score, y[rows])
        if "network" in names:
            network = ModalityNetwork(c, **self._network_settings, seed=seed).fit(samples, y, train=train,
                                                                                 validation=validation)
        return _Learners(names, linear, program, network)

    def _inner_folds(self, samples, y, rows):
        """(train, validation, test) sample rows of each inner fold over the patients of ``rows`` (stratified like
        the outer folds: by label, and by batch where the samples carry one), or ``None`` when they are too few for
        every inner fold to train on both labels."""
        obs = samples.obs.iloc[rows]
        columns = ["unit", "patient"] + (["batch"] if "batch" in obs else [])
        units = obs[columns].astype(str).assign(label=y[rows]).drop_duplicates("unit")
        try:
            folds = patient_folds(units, n_folds=self.config.stack_folds, seed=self.seed)
        except (FoldError, ValueError):
            return None
        unit = obs["unit"].astype(str).to_numpy()
        label = units.set_index("unit")["label"]
        inner = []
        for fold in folds:  # each inner fold's learners must train on both labels
            if not len(fold.train) or label.loc[fold.train].nunique() < 2:
                return None
            inner.append(tuple(rows[np.isin(unit, side)] for side in (fold.train, fold.validation, fold.test)))
        return inner


@dataclasses.dataclass
class _Learners:
    """GMVAE4P's fitted learners (``None`` where not used): the linear one as (genes, fitted pipeline), the
    program one as (program, logistic regression on its score)."""

    names: tuple[str, ...]
    linear: tuple[np.ndarray, object] | None
    program: tuple[LearnedProgram, LogisticRegression] | None
    network: ModalityNetwork | None

    @property
    def reads_modalities(self) -> bool:
        """Whether the network can be given the true modalities (the scRNA mode)."""
        return self.network is not None and bool(self.network.modalities)

    def logits(self, samples: ad.AnnData, rows: np.ndarray, *, use_true: bool = False) -> np.ndarray:
        """Each learner's logit of the positive label for sample rows ``rows`` (rows × learners); ``use_true`` is
        ignored unless the network :attr:`reads_modalities`."""
        expression = feature_block(samples, BULK)
        columns = []
        for name in self.names:
            if name == "linear":
                genes, model = self.linear
                columns.append(model.decision_function(expression[np.ix_(rows, genes)]))
            elif name == "program":
                learned, model = self.program
                columns.append(model.decision_function(learned.score(expression, rows)[:, None]))
            else:
                columns.append(self.network_logits(samples, rows, use_true=use_true))
        return np.column_stack(columns).astype(np.float64)

    def network_logits(self, samples: ad.AnnData, rows: np.ndarray, *, use_true: bool = False) -> np.ndarray:
        """The network's logit of the positive label for sample rows ``rows`` (``use_true`` as :meth:`logits`)."""
        p = np.clip(self.network.predict(samples, rows, use_true=use_true and self.reads_modalities)
                    .probability.astype(np.float64), 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)
