"""Prints the README's table (one row per cohort) and every method's mean AUC from the benchmark.csv of this folder,
or of the folder given as the argument."""
import sys
from pathlib import Path

import pandas as pd

table = pd.read_csv(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent) / "benchmark.csv")
t = table[table["status"] == "complete"]
print("| cohort | GMVAE4P | GMVAE4P, scRNA modalities given | logistic regression | best baseline | GMVAE4P − best | "
      "GMVAE4P bal. acc. | oracle |")
print("|---|---|---|---|---|---|---|---|")
for cohort, part in t.groupby("cohort", sort=False):
    p = part.set_index("method")
    base = p.loc[[m for m in p.index if m not in ("gmvae4p", "gmvae4p_scrna") and not str(m).startswith("oracle")]]
    best = base["auc"].idxmax()

    def cell(m):
        return f"{p.loc[m, 'auc']:.3f} [{p.loc[m, 'auc_low']:.2f}, {p.loc[m, 'auc_high']:.2f}]"

    oracle = f"{p.loc['oracle (simulated activity)', 'auc']:.3f}" if "oracle (simulated activity)" in p.index else "–"
    print(f"| {cohort} | {cell('gmvae4p')} | {cell('gmvae4p_scrna')} | {cell('logistic_regression')} | {best} "
          f"{base.loc[best, 'auc']:.3f} | {p.loc['gmvae4p', 'auc'] - base.loc[best, 'auc']:+.3f} | "
          f"{p.loc['gmvae4p', 'balanced_accuracy']:.2f} | {oracle} |")
means = t[~t["method"].astype(str).str.startswith("oracle")].groupby("method")["auc"].agg(["mean", "count"])
print(means.sort_values("mean", ascending=False).round(3).to_string())
outside = t[~t["method"].astype(str).str.startswith("oracle") & ((t["auc_low"] > 0.5) | (t["auc_high"] < 0.5))]
print("intervals without 0.5 in no_effect:", outside[outside["cohort"] == "no_effect"][["method", "auc"]].to_dict("records"))
