"""The ten-cohort table with this folder's rare_type_state in place of the earlier run's (2,000 cells per patient
instead of 200): writes ten_cohorts.csv and prints the README's table and every method's mean AUC."""
from pathlib import Path
import pandas as pd
here = Path(__file__).parent
earlier = pd.read_csv(here.parent / "cohort_benchmark_cpu_2026-12-06_auc_weighted_stack" / "benchmark.csv")
rare = pd.read_csv(here / "benchmark.csv")
merged = pd.concat([earlier[earlier["cohort"] != "rare_type_state"], rare])
order = list(earlier["cohort"].drop_duplicates())
merged = merged.set_index("cohort").loc[order].reset_index()
merged.to_csv(here / "ten_cohorts.csv", index=False)
t = merged[merged["status"] == "complete"]
print("| cohort | GMVAE4P | GMVAE4P, scRNA modalities given | logistic regression | best baseline | GMVAE4P − best | GMVAE4P bal. acc. | oracle |")
print("|---|---|---|---|---|---|---|---|")
for cohort, part in t.groupby("cohort", sort=False):
    p = part.set_index("method")
    base = p.loc[[m for m in p.index if m not in ("gmvae4p", "gmvae4p_scrna") and not str(m).startswith("oracle")]]
    best = base["auc"].idxmax()
    f = lambda m: f"{p.loc[m, 'auc']:.3f} [{p.loc[m, 'auc_low']:.2f}, {p.loc[m, 'auc_high']:.2f}]"
    oracle = f"{p.loc['oracle (simulated activity)', 'auc']:.3f}" if "oracle (simulated activity)" in p.index else "–"
    print(f"| {cohort} | {f('gmvae4p')} | {f('gmvae4p_scrna')} | {f('logistic_regression')} | {best} "
          f"{base.loc[best, 'auc']:.3f} | {p.loc['gmvae4p', 'auc'] - base.loc[best, 'auc']:+.3f} | "
          f"{p.loc['gmvae4p', 'balanced_accuracy']:.2f} | {oracle} |")
means = t[~t["method"].astype(str).str.startswith("oracle")].groupby("method")["auc"].agg(["mean", "count"])
print(means.sort_values("mean", ascending=False).round(3).to_string())
