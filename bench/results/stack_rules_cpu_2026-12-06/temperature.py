"""One temperature per outer fold on the stacked logit (fitted on the inner folds' unit means, class-balanced): the
pooled out-of-fold AUC, ECE and balanced accuracy against the stack as it is. Reads the pickles dump.py writes to
/tmp/stackexp; output in temperature.out."""
import glob
import pickle

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sig = lambda z: 1 / (1 + np.exp(-z))


def inner_unit_auc(f):
    u = pd.DataFrame(f["inner_logits"]).groupby(f["inner_unit"]).mean()
    t = pd.Series(f["inner_y"]).groupby(f["inner_unit"]).first().loc[u.index]
    return np.array([roc_auc_score(t, u[j]) for j in range(3)])


def ece(y, p, bins=10):
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return sum((idx == b).mean() * abs(y[idx == b].mean() - p[idx == b].mean()) for b in range(bins) if (idx == b).any())


rows = []
for path in sorted(glob.glob("/tmp/stackexp/*.pkl")):
    frames = []
    for f in pickle.load(open(path, "rb")):
        if f["inner_logits"] is None:
            continue
        li, yi, lt = np.clip(f["inner_logits"], -10, 10), f["inner_y"], np.clip(f["test_logits"], -10, 10)
        sd = li.std(0) + 1e-9
        a = inner_unit_auc(f)
        w = np.clip(a - .5, 0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(3, 1 / 3)
        zi, zt = (li / sd) @ w, (lt / sd) @ w
        zu = pd.Series(zi).groupby(f["inner_unit"]).mean()
        yu = pd.Series(yi).groupby(f["inner_unit"]).first().loc[zu.index].to_numpy()
        zu = zu.to_numpy()
        bal = np.where(yu == 1, .5 / yu.sum(), .5 / (1 - yu).sum())
        T = minimize_scalar(lambda t: float(bal @ (np.logaddexp(0, t * zu) - yu * t * zu)), bounds=(0.05, 20),
                            method="bounded").x
        frames.append(pd.DataFrame({"current": sig(zt), "temperature": sig(T * zt), "unit": f["test_unit"],
                                    "y": f["test_y"], "T": T}))
    if not frames:
        continue
    d = pd.concat(frames).groupby("unit").mean()
    y = d["y"].to_numpy()
    r = {"cohort": path.split("/")[-1][:-4]}
    for k in ("current", "temperature"):
        r[k + "_auc"] = roc_auc_score(y, d[k])
        r[k + "_ece"] = ece(y, d[k].to_numpy())
        r[k + "_bacc"] = balanced_accuracy_score(y, d[k] > .5)
    r["T_mean"] = d["T"].mean()
    rows.append(r)
t = pd.DataFrame(rows).set_index("cohort")
t.loc["mean"] = t.mean()
print(t.round(3).to_string())
