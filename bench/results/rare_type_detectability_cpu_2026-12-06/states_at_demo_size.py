"""rare_type_state: can the pDC states (GMVAE z-score means, or expression means) tell the labels at all?"""
import anndata as ad, numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.metrics import roc_auc_score
# stage 03 output of the cohort benchmark run at commit a810218 (../cohort_benchmark_cpu_2026-12-06_unit_mixtures)
s = ad.read_h5ad("/tmp/bench_s04/rare_type_state/data/pseudobulk.h5ad")
obs = s.obs
print(obs["kind"].value_counts().to_dict(), obs["label"].unique().tolist(), s.obsm["proportions"].columns.tolist())
y = (obs["label"].astype(str) != obs["label"].astype(str).iloc[0]).astype(int).to_numpy()
print("pDC fraction", float(np.asarray(s.obsm["composition"])[:, list(s.obsm["proportions"].columns).index("pDC")].mean()))
print("whole n_cells", obs.loc[obs.kind == "whole", "n_cells"].describe().to_dict())
for key in ("states", "states_expression"):
    names = s.uns["pseudobulk"]["state_features" if key == "states" else "state_expression_features"]
    cols = [i for i, n in enumerate(names) if n.startswith("pDC|")]
    for kindname in ("whole", "mixture"):
        r = (obs["kind"] == kindname).to_numpy()
        X = np.nan_to_num(np.asarray(s.obsm[key])[r][:, cols]); yy = y[r]; g = obs["patient"].astype(str).to_numpy()[r]
        for C in (0.01, 0.1, 1.0):
            p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=3000)),
                                  X, yy, groups=g, cv=GroupKFold(5), method="predict_proba")[:, 1]
            u = pd.DataFrame({"p": p, "y": yy, "u": obs["unit"].astype(str).to_numpy()[r]}).groupby("u").mean()
            print(key, kindname, C, round(roc_auc_score(u.y, u.p), 3))
