"""The program learner with a second learned program beside the first, scored offline on a cohort benchmark's
stage 01-03 outputs (not adopted).

Per cohort folder and outer fold (its `tables/folds.csv`): the first program is GMVAE4P's (`LearnedProgram.fit` on
the fold's training and validation units' mixture samples); the second is learned the same way from the genes that
are neither in the first nor correlated with its score across those units beyond the first's own threshold. The
program learner's class-balanced regression reads the first score ("one", as GMVAE4P does) or both ("two"); the
test units' probabilities are the means over their mixture samples, and the AUC is over every test unit.

    PYTHONPATH=lib python second_program.py BENCHMARK_DIR [BENCHMARK_DIR ...]
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from gmvae4p import keys
from gmvae4p.classify.cv import read_folds
from gmvae4p.classify.model import BULK, feature_block
from gmvae4p.classify.program import LearnedProgram
from gmvae4p.data import read_h5ad


def second_program_scores(expression, fit_rows, unit, y, first):
    """Every sample's score of the second program, or None when too few genes are left to learn one."""
    every = np.arange(len(unit))
    first_score = first.score(expression, every)
    means = pd.DataFrame(expression[fit_rows]).groupby(unit[fit_rows]).mean()
    unit_score = pd.Series(first_score[fit_rows]).groupby(unit[fit_rows]).mean().loc[means.index].to_numpy()
    standardized = (means - means.mean()) / means.std(ddof=0).replace(0, np.inf)
    correlation = standardized.to_numpy().T @ ((unit_score - unit_score.mean()) / unit_score.std()) / len(unit_score)
    threshold = first.correlation_threshold if np.isfinite(first.correlation_threshold) else 0.5
    rest = np.flatnonzero((np.abs(correlation) <= threshold) & ~np.isin(np.arange(expression.shape[1]), first.genes))
    if len(rest) < 2:
        return None
    return LearnedProgram.fit(expression[:, rest], fit_rows, unit, y).score(expression[:, rest], every)


def cohort_aucs(folder: Path) -> dict:
    samples = read_h5ad(folder / "data" / "pseudobulk.h5ad")
    units, folds = read_folds(pd.read_csv(folder / "tables" / "folds.csv"))
    unit = samples.obs["unit"].astype(str).to_numpy()
    mixture = (samples.obs[keys.KIND] == keys.MIXTURE).to_numpy()
    y = pd.Series(unit).map(units.set_index("unit")["y"]).fillna(-1).astype(int).to_numpy()
    expression = feature_block(samples, BULK)
    predictions = {"one": [], "two": []}
    for fold in folds:
        fit_rows = np.flatnonzero(mixture & np.isin(unit, list(fold.train) + list(fold.validation)))
        test = np.flatnonzero(mixture & np.isin(unit, fold.test))
        first = LearnedProgram.fit(expression, fit_rows, unit, y)
        one = first.score(expression, np.arange(len(unit)))[:, None]
        second = second_program_scores(expression, fit_rows, unit, y, first)
        for name, scores in (("one", one), ("two", one if second is None else np.column_stack([one[:, 0], second]))):
            model = LogisticRegression(class_weight="balanced").fit(scores[fit_rows], y[fit_rows])
            predictions[name].append(pd.DataFrame({"unit": unit[test], "y": y[test],
                                                   "p": model.predict_proba(scores[test])[:, 1]}))
    result = {}
    for name, parts in predictions.items():
        per_unit = pd.concat(parts).groupby("unit").agg(y=("y", "first"), p=("p", "mean"))
        result[name] = roc_auc_score(per_unit["y"], per_unit["p"])
    return result


if __name__ == "__main__":
    rows = {}
    for benchmark in sys.argv[1:]:
        for folder in sorted(p for p in Path(benchmark).iterdir() if (p / "data" / "pseudobulk.h5ad").is_file()):
            rows[folder.name] = cohort_aucs(folder)
    table = pd.DataFrame(rows).T.rename(columns={"one": "program learner (one program)",
                                                 "two": "program learner (two programs)"})
    print(table.round(3).to_string())
    print("mean", table.mean().round(3).to_dict())
