"""Stack rules scored post hoc on one cohort-benchmark run, for GMVAE4P from bulk and in the scRNA mode: each fold's
learners' probabilities on its test samples (gmvae4p_learners.csv; the scRNA mode's network is `network_scrna`)
combined by the weights a rule draws from that fold's inner-fold AUCs and scales (gmvae4p_stack.csv); pooled per-unit
AUC over the folds. Checks first that the rule stage 04 ran (RAN_RULE, default the AUC-weighted one) reproduces both
modes' reported probabilities.
Usage: stack_rules.py BENCHMARK_FOLDER [RAN_RULE] > stack_rules.out (here: stack_rules.py auc_weighted; for
../cohort_benchmark_cpu_2026-12-07_network_held_out_scale: stack_rules.py FOLDER equal)"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

LIMIT = 10.0
LEARNERS = ["linear", "program", "network"]
RULES = ["auc_weighted", "equal", "equal_above_chance", "best_inner", "linear + program", *LEARNERS]
RAN = sys.argv[2] if len(sys.argv) > 2 else "auc_weighted"


def weights(rule, inner_auc):
    margin = np.clip(inner_auc - 0.5, 0, None)
    if rule == "auc_weighted":
        w = margin
    elif rule == "equal":
        w = np.ones(len(LEARNERS))
    elif rule == "equal_above_chance":
        w = (margin > 0).astype(float)
    elif rule == "best_inner":
        w = (inner_auc == inner_auc.max()).astype(float)
    elif rule == "linear + program":
        w = np.array([1.0, 1.0, 0.0])
    else:
        w = np.array([name == rule for name in LEARNERS], dtype=float)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1 / len(w))


rows = []
for folder in sorted(Path(sys.argv[1]).iterdir()):
    tables = folder / "tables" if (folder / "tables").is_dir() else folder
    if not (tables / "gmvae4p_learners.csv").is_file():
        continue
    learners = pd.read_csv(tables / "gmvae4p_learners.csv")
    stack = pd.read_csv(tables / "gmvae4p_stack.csv")
    predictions = pd.read_csv(tables / "predictions.csv")
    truth = learners.groupby("unit")["label"].first()
    for mode, method, suffix in [("bulk", "gmvae4p", ""), ("scRNA", "gmvae4p_scrna", "_scrna")]:
        columns = [name + suffix if name == "network" else name for name in LEARNERS]
        p = learners[columns].to_numpy().clip(1e-12, 1 - 1e-12)
        logits = np.clip(np.log(p) - np.log1p(-p), -LIMIT, LIMIT)
        reported = predictions.query("method == @method").set_index("unit")["probability"]
        result = {"cohort": folder.name, "mode": mode}
        for rule in RULES:
            z = np.zeros(len(learners))
            for fold, part in stack.groupby("fold"):
                part = part.set_index("learner").loc[LEARNERS]
                rows_of_fold = (learners["fold"] == fold).to_numpy()
                # the stack's table names it held_out_auc since the network is scaled on its validation units
                auc_column = "inner_auc" if "inner_auc" in part else "held_out_auc"
                inner_auc = part[f"{auc_column}{suffix}"].to_numpy()
                if np.isfinite(inner_auc).all():  # (the current rule's weights are equal if none beat chance)
                    w = weights(rule, inner_auc)
                else:  # too few patients for inner folds: every rule is the equal mean
                    w = np.full(len(LEARNERS), 1 / len(LEARNERS))
                z[rows_of_fold] = logits[rows_of_fold] / part[f"scale{suffix}"].to_numpy() @ w
            unit_p = pd.Series(1 / (1 + np.exp(-z))).groupby(learners["unit"].to_numpy()).mean()
            if rule == RAN:
                assert np.allclose(unit_p.loc[reported.index], reported, atol=1e-5), (folder.name, mode)
            result[rule] = roc_auc_score(truth.loc[unit_p.index], unit_p)
        rows.append(result)
table = pd.DataFrame(rows).set_index(["mode", "cohort"]).sort_index().rename(columns={RAN: f"{RAN} (ran)"})
for mode, part in table.groupby(level="mode"):
    part = part.droplevel("mode")
    part.loc["mean"] = part.mean()
    print(f"GMVAE4P, {mode}:")
    print(part.round(3).to_string(), "\n")
