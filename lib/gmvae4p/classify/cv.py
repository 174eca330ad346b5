"""Patient-grouped cross-validation folds.

Outer folds are grouped by patient, so no patient's units (its pseudobulk samples, or its samples when units are
samples) fall on both sides, and stratified by label and, where the cohort names a processing batch, by each unit's
batch too: a test fold whose positives all come from one batch and negatives from the other leaves a training fold
where the batch leans the other way, and a learner that reads the batch effect then scores the test fold below chance
(anti-learning), which a null cohort shows as intervals below 0.5. Inside each outer training fold, a validation split,
grouped by patient too, is what early stopping and learning-rate changes may look at; the outer test fold is used
once, to score.
"""

from __future__ import annotations

import dataclasses
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


class FoldError(ValueError):
    """Folds that the cohort cannot give; the message names the parameter."""


@dataclasses.dataclass(frozen=True)
class Fold:
    """Unit names on each side of one outer fold (``validation`` may be empty: see :func:`patient_folds`)."""

    index: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def unit_table(samples: ad.AnnData, positive_label: str) -> pd.DataFrame:
    """One row per unit of a pseudobulk AnnData: ``unit``, ``patient``, ``label`` (its name) and ``y`` (1 for
    ``positive_label``, else 0); where the samples carry a ``batch`` (stage 03 writes the processing batch of most
    of each unit's cells when the cohort names a batch key), also ``batch``, which :func:`patient_folds` stratifies
    by. Classification is binary: a cohort with another number of labels is refused."""
    if "label" not in samples.obs:
        raise FoldError("the samples have no label: set data.label_key to classify.")
    columns = ["unit", "patient", "label"] + (["batch"] if "batch" in samples.obs else [])
    units = samples.obs[columns].astype(str).drop_duplicates("unit").reset_index(drop=True)
    if samples.obs.groupby("unit", observed=True)["label"].nunique().max() > 1:
        raise FoldError("a unit's samples carry different labels.")
    present = sorted(set(units["label"]))
    if len(present) != 2 or positive_label not in present:
        raise FoldError(f"classification is binary: positive_label {positive_label!r} must be one of exactly two "
                        f"labels, and the samples have {present}.")
    return units.assign(y=(units["label"] == positive_label).astype(int))


def sample_labels(samples: ad.AnnData, units: pd.DataFrame) -> np.ndarray:
    """Each sample's ``y`` from its unit's row of ``units`` (:func:`unit_table`, possibly permuted)."""
    return units.set_index("unit")["y"].loc[samples.obs["unit"].astype(str)].to_numpy()


def permute_labels(units: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The null control, applied before anything is fitted: labels shuffled across patients when each patient has
    one label; in a paired design (a patient's units differ, e.g. ctrl/stim) shuffled among each patient's units."""
    rng = np.random.default_rng(seed)
    units = units.reset_index(drop=True)
    if (units.groupby("patient")["label"].nunique() == 1).all():
        first = units.drop_duplicates("patient").set_index("patient")
        donor = dict(zip(first.index, rng.permutation(first.index.to_numpy())))  # each takes another's label
        source = first.loc[units["patient"].map(donor), ["label", "y"]].to_numpy()
        return units.assign(label=source[:, 0], y=source[:, 1].astype(int))
    order = np.arange(len(units))
    for rows in units.groupby("patient").indices.values():
        order[rows] = rng.permutation(rows)
    return units.assign(label=units["label"].to_numpy()[order], y=units["y"].to_numpy()[order])


def patient_folds(units: pd.DataFrame, *, n_folds: int = 5, validation_fraction: float = 0.2,
                  seed: int = 0) -> list[Fold]:
    """Outer folds over ``units`` (one row per unit with columns ``unit``, ``patient``, ``label``, and optionally
    ``batch``: then stratified by label × batch, else by label).

    Each unit is in exactly one test fold. The validation split takes about ``validation_fraction`` of a training
    fold's patients (stratified); with fewer than two training patients, or ``validation_fraction`` 0, it is empty
    and the classifier trains for a fixed number of epochs instead.
    """
    missing = {"unit", "patient", "label"} - set(units.columns)
    if missing:
        raise FoldError(f"units need the columns {sorted(missing)}.")
    n_patients = units["patient"].nunique()
    if not 2 <= n_folds <= n_patients:
        raise FoldError(f"n_folds must be between 2 and the number of patients ({n_patients}), not {n_folds}.")
    if not 0 <= validation_fraction < 1:
        raise FoldError(f"validation_fraction must be in [0, 1), not {validation_fraction!r}.")
    names, patients = units["unit"].to_numpy(), units["patient"].to_numpy()
    labels = units["label"].to_numpy()
    strata = units["label"].astype(str) + ("|" + units["batch"].astype(str) if "batch" in units else "")
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():  # a class with fewer patients than folds is allowed (checked before stage 01)
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for index, (train, test) in enumerate(outer.split(names, strata.to_numpy(), groups=patients)):
            validation = _validation_split(train, labels, patients, validation_fraction, seed + index)
            train = np.setdiff1d(train, validation)
            folds.append(Fold(index, names[train], names[validation], names[test]))
    return folds


SIDES = ("train", "validation", "test")


def folds_table(units: pd.DataFrame, folds: list[Fold]) -> pd.DataFrame:
    """``units`` (:func:`unit_table`) with one column per fold, ``fold_<i>``, saying on which side of it each unit
    is (:data:`SIDES`; empty when it is on none): stage 04 writes it as ``tables/folds.csv`` and the later stages
    read it with :func:`read_folds` instead of drawing the folds again."""
    table = units.reset_index(drop=True).copy()
    for fold in folds:
        side = pd.Series("", index=table["unit"].to_numpy(), dtype=object)
        for name in SIDES:
            side.loc[getattr(fold, name)] = name
        table[f"fold_{fold.index}"] = side.to_numpy()
    return table


def read_folds(table: pd.DataFrame) -> tuple[pd.DataFrame, list[Fold]]:
    """The units and folds of a :func:`folds_table` (as read from ``tables/folds.csv``), in their saved order."""
    columns = [c for c in table.columns if c.startswith("fold_")]
    missing = {"unit", "patient", "label", "y"} - set(table.columns)
    if missing or not columns:
        raise FoldError(f"a folds table needs the columns unit, patient, label, y and fold_<i>; "
                        f"it lacks {sorted(missing) or 'every fold_<i>'}.")
    table = table.astype({"unit": str, "patient": str, "label": str})
    names = table["unit"].to_numpy()
    sides = table[columns].fillna("").astype(str)
    folds = [Fold(int(column.removeprefix("fold_")), *(names[(sides[column] == name).to_numpy()] for name in SIDES))
             for column in columns]
    return table[["unit", "patient", "label", "y"]].astype({"y": int}), folds


def final_split(units: pd.DataFrame, *, validation_fraction: float = 0.2, seed: int = 0) -> Fold:
    """Every unit for the final model: a patient-grouped, stratified share ``validation_fraction`` of them for early
    stopping (as inside each outer fold), the rest for training, none for testing (fold index −1)."""
    names, patients, labels = units["unit"].to_numpy(), units["patient"].to_numpy(), units["label"].to_numpy()
    rows = np.arange(len(units))
    validation = _validation_split(rows, labels, patients, validation_fraction, seed)
    return Fold(-1, names[np.setdiff1d(rows, validation)], names[validation], names[:0])


def _validation_split(rows, labels, patients, fraction, seed) -> np.ndarray:
    n_patients = len(np.unique(patients[rows]))
    if fraction == 0 or n_patients < 2:
        return np.array([], dtype=int)
    # sklearn needs a class with at least n_splits patients: small folds get a larger validation share
    largest_class = pd.Series(patients[rows]).groupby(labels[rows]).nunique().max()
    n_splits = max(2, min(n_patients, round(1 / fraction), largest_class))
    inner = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _, validation = next(inner.split(rows, labels[rows], groups=patients[rows]))
    return rows[validation]


def subsample_fold(fold: Fold, units: pd.DataFrame, *, n_units: int, validation_fraction: float = 0.2,
                   seed: int = 0) -> Fold:
    """``fold`` with its training side cut to about ``n_units`` units of whole patients drawn at random, stratified
    by label (both labels as soon as ``n_units`` ≥ 2), then split into training and validation again; the test
    units stay the same (Table 2)."""
    pool = units[units["unit"].isin(np.concatenate([fold.train, fold.validation]))].reset_index(drop=True)
    patients = pool.drop_duplicates("patient").sample(frac=1.0, random_state=seed)
    # each label's patients in shuffled order, interleaved in proportion to the label's share
    patients["key"] = patients.groupby("label").cumcount() / patients.groupby("label")["patient"].transform("size")
    chosen, taken = [], 0
    for patient in patients.sort_values("key", kind="stable")["patient"]:
        if taken >= n_units:
            break
        chosen.append(patient)
        taken += int((pool["patient"] == patient).sum())
    rows = np.flatnonzero(pool["patient"].isin(chosen).to_numpy())
    validation = _validation_split(rows, pool["label"].to_numpy(), pool["patient"].to_numpy(),
                                   validation_fraction, seed)
    names = pool["unit"].to_numpy()
    return Fold(fold.index, names[np.setdiff1d(rows, validation)], names[validation], fold.test)


COLUMN_BLOCK = 4_096
"""Columns whose variance :func:`most_variable` computes at a time."""


def most_variable(features: np.ndarray, rows: np.ndarray, n_top: int) -> np.ndarray:
    """Column indices of the ``n_top`` features with the largest variance over ``rows`` (the training units'
    samples: selecting on all rows would let test units choose features). NaN entries are ignored; a column
    missing in every row is never chosen."""
    variance = np.zeros(features.shape[1])
    with warnings.catch_warnings():  # all-NaN columns (a type never drawn) are expected: they rank last
        warnings.simplefilter("ignore", RuntimeWarning)
        # a block of columns at a time: nanvar's temporaries of all rows × columns (hundreds of thousands of
        # communication features) would be several copies of the training rows, in every fold worker at once
        for start in range(0, features.shape[1] if len(rows) else 0, COLUMN_BLOCK):
            block = features[rows, start:start + COLUMN_BLOCK]
            # where nothing is missing var gives nanvar's numbers (the same sums) several times faster
            variance[start:start + COLUMN_BLOCK] = np.nanvar(block, axis=0) if np.isnan(block).any() \
                else np.var(block, axis=0)
    variance = np.where(np.isnan(variance), -np.inf, variance)
    return np.sort(np.argsort(-variance, kind="stable")[:n_top])
