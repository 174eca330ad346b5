"""For each method of the benchmark's Table 1 (the scRNA mode and the oracles left out): on how many cohorts its AUC is
within 0.02 of the best other method's, issue 24's bar for GMVAE4P, and its mean gap to that best.
Usage: within_margin.py [FOLDER] (default: this one) > within_margin.out"""
import sys
from pathlib import Path

import pandas as pd

MARGIN = 0.02
table = pd.read_csv(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent) / "benchmark.csv")
table = table[(table["status"] == "complete") & ~table["method"].astype(str).str.startswith("oracle")]
auc = table[table["method"] != "gmvae4p_scrna"].pivot(index="cohort", columns="method", values="auc")
rows = []
for method in auc.columns:
    best_other = auc.drop(columns=[method]).max(axis=1)
    within = auc[method] >= best_other - MARGIN
    rows.append({"method": method, "cohorts within 0.02 of the best other": f"{within.sum()}/{len(within)}",
                 "not within": ", ".join(within.index[~within]), "mean gap": round((auc[method] - best_other).mean(), 3)})
print(pd.DataFrame(rows).sort_values("mean gap", ascending=False).to_string(index=False))
