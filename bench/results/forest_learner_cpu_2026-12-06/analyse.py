import pickle, glob, os, sys
import numpy as np, pandas as pd
from sklearn.metrics import roc_auc_score
from gmvae4p.classify.stack import fit_stack
trees = sys.argv[1]
L3 = ("linear", "program", "network"); L4 = L3 + ("forest",)
rows = []
for path in sorted(glob.glob(f"/tmp/forestexp/*_{trees}.pkl")):
    cohort = os.path.basename(path)[:-len(f"_{trees}.pkl")]
    frames = []
    for f in pickle.load(open(path, "rb")):
        li4 = np.column_stack([f["inner_logits"], f["inner_forest"]]); lt4 = np.column_stack([f["test_logits"], f["test_forest"]])
        s3 = fit_stack(f["inner_logits"], f["inner_y"], f["inner_unit"], L3)
        s4 = fit_stack(li4, f["inner_y"], f["inner_unit"], L4)
        s_lf = fit_stack(li4[:, [0, 1, 3]], f["inner_y"], f["inner_unit"], ("linear", "program", "forest"))
        sig = lambda z: 1 / (1 + np.exp(-z))
        frames.append(pd.DataFrame({"stack3": s3.probability(f["test_logits"]), "stack4": s4.probability(lt4),
                                    "no_network": s_lf.probability(lt4[:, [0, 1, 3]]),
                                    **{n: sig(lt4[:, j]) for j, n in enumerate(L4)},
                                    "unit": f["test_unit"], "y": f["test_y"]}))
        print(cohort, f["fold"], "w4", np.round(s4.weights, 2), "auc", {k: round(v, 2) for k, v in s4.inner_auc.items()})
    d = pd.concat(frames).groupby("unit").mean()
    rows.append({"cohort": cohort, **{k: roc_auc_score(d["y"], d[k]) for k in d.columns if k != "y"}})
t = pd.DataFrame(rows).set_index("cohort"); t.loc["mean"] = t.mean()
print(t.round(3).to_string())
