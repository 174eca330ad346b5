import pickle, sys, glob, os
import numpy as np, pandas as pd
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from previous_stack import fit_stack  # the regression stack of commit bdae5d5
from sklearn.metrics import roc_auc_score
L = ("linear", "program", "network")
sig = lambda z: 1 / (1 + np.exp(-z))
def unit_mean(values, unit):
    return pd.DataFrame(values).groupby(unit).mean()
def inner_unit_auc(f):
    u = unit_mean(f["inner_logits"], f["inner_unit"]); t = pd.Series(f["inner_y"]).groupby(f["inner_unit"]).first().loc[u.index]
    return np.array([roc_auc_score(t, u[j]) for j in range(3)])
def rules(f):
    li, yi, lt = np.clip(f["inner_logits"], -10, 10), f["inner_y"], np.clip(f["test_logits"], -10, 10)
    out = {}
    s = fit_stack(li, yi, L); out["current"] = s.probability(lt)
    u = unit_mean(li, f["inner_unit"]).to_numpy(); uy = pd.Series(yi).groupby(f["inner_unit"]).first().sort_index().to_numpy()
    s = fit_stack(u, uy, L); out["unit_stack"] = s.probability(lt)
    sd = li.std(0) + 1e-9
    out["equal_std"] = sig((lt / sd).mean(1))
    out["equal_raw"] = sig(lt.mean(1))
    a = inner_unit_auc(f); out["select"] = sig(lt[:, np.argmax(a)])
    for j, n in enumerate(L): out[n] = sig(lt[:, j])
    out["lin+prog_std"] = sig((lt[:, :2] / sd[:2]).mean(1))
    w = np.clip(a - 0.5, 0, None); w = w / w.sum() if w.sum() > 0 else np.full(3, 1 / 3)
    out["aucweighted_std"] = sig((lt / sd) @ w)
    keep = (a > 0.5).astype(float); keep = keep / keep.sum() if keep.sum() else np.full(3, 1/3)
    out["drop_chance_std"] = sig((lt / sd) @ keep)
    zi = (li / sd) @ w
    fs = fit_stack
    s1 = fs(zi[:, None], yi, ("c",)); out["aucw_fit"] = s1.probability(((lt / sd) @ w)[:, None])
    w2 = np.clip(a - 0.5, 0, None) ** 2; w2 = w2 / w2.sum() if w2.sum() > 0 else np.full(3, 1 / 3)
    out["aucw2_std"] = sig((lt / sd) @ w2)
    from scipy.optimize import minimize_scalar
    bal = np.where(yi == 1, 0.5 / yi.sum(), 0.5 / (1 - yi).sum())
    b = minimize_scalar(lambda b: float(bal @ (np.logaddexp(0, zi + b) - yi * (zi + b)))).x
    out["aucw_icpt"] = sig((lt / sd) @ w + b)
    return out
rows = []
for path in sorted(glob.glob("/tmp/stackexp/*.pkl")):
    cohort = os.path.basename(path)[:-4]
    folds = pickle.load(open(path, "rb"))
    frames = []
    for f in folds:
        if f["inner_logits"] is None: continue
        r = rules(f)
        frames.append(pd.DataFrame({**r, "unit": f["test_unit"], "y": f["test_y"]}))
    if not frames: continue
    d = pd.concat(frames).groupby("unit").mean()
    rows.append({"cohort": cohort, **{k: roc_auc_score(d["y"], d[k]) for k in d.columns if k != "y"}})
    from sklearn.metrics import balanced_accuracy_score as bas
    print(cohort, {k: round(bas(d["y"], d[k] > 0.5), 3) for k in ("current", "aucweighted_std", "linear")})
t = pd.DataFrame(rows).set_index("cohort")
t.loc["mean"] = t.mean()
from sklearn.metrics import balanced_accuracy_score

cols=["current","equal_std","aucweighted_std","aucw_fit","aucw_icpt","aucw2_std","drop_chance_std","select","linear","program","network"]
print(t[cols].round(3).to_string())
t.to_csv("/tmp/stackexp/stack_rules_auc.csv")
