"""Stack rules compared post hoc on one cohort-benchmark run: each fold's learners' probabilities on its test samples
(stage 04's gmvae4p_learners.csv) combined by the weights each rule draws from that fold's inner-fold AUCs and scales
(gmvae4p_stack.csv); pooled per-unit AUC over the folds. Usage: analyse.py BENCHMARK_FOLDER > analyse.out"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

LIMIT = 10.0


def weights(rule, inner_auc):
    margin = np.clip(inner_auc - 0.5, 0, None)
    if rule == "auc_weighted (current)":
        w = margin
    elif rule == "equal":
        w = np.ones_like(margin)
    elif rule == "squared_margin":
        w = margin ** 2
    elif rule == "best_inner":
        w = (inner_auc == inner_auc.max()).astype(float)
    elif rule in LEARNERS:
        w = np.array([name == rule for name in LEARNERS], dtype=float)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))


LEARNERS = ["linear", "program", "network"]
RULES = ["auc_weighted (current)", "equal", "squared_margin", "best_inner", *LEARNERS]

rows = []
for folder in sorted(Path(sys.argv[1]).iterdir()):
    tables = folder / "tables" if (folder / "tables").is_dir() else folder  # a run's folder, or a copy of its tables
    if not (tables / "gmvae4p_learners.csv").is_file():
        continue
    learners = pd.read_csv(tables / "gmvae4p_learners.csv")
    stack = pd.read_csv(tables / "gmvae4p_stack.csv")
    reported = pd.read_csv(tables / "predictions.csv").query("method == 'gmvae4p'").set_index("unit")["probability"]
    p = learners[LEARNERS].to_numpy().clip(1e-12, 1 - 1e-12)
    logits = np.clip(np.log(p) - np.log1p(-p), -LIMIT, LIMIT)
    truth = learners.groupby("unit")["label"].first()
    result = {"cohort": folder.name}
    for rule in RULES:
        z = np.zeros(len(learners))
        for fold, part in stack.groupby("fold"):
            part = part.set_index("learner").loc[LEARNERS]
            rows_of_fold = (learners["fold"] == fold).to_numpy()
            if part["stacked_on"].iloc[0] == "inner folds":
                w = weights(rule, part["inner_auc"].to_numpy())
            else:  # too few patients for inner folds: every rule is the equal mean
                w = np.full(len(LEARNERS), 1 / len(LEARNERS))
            z[rows_of_fold] = logits[rows_of_fold] / part["scale"].to_numpy() @ w
        unit_p = pd.Series(1 / (1 + np.exp(-z))).groupby(learners["unit"].to_numpy()).mean()
        if rule == RULES[0]:  # the rule stage 04 ran reproduces its reported probabilities
            assert np.allclose(unit_p.loc[reported.index], reported, atol=1e-6), folder.name
        result[rule] = roc_auc_score(truth.loc[unit_p.index], unit_p)
    rows.append(result)
table = pd.DataFrame(rows).set_index("cohort")
table.loc["mean"] = table.mean()
print(table.round(3).to_string())
