"""The GMVAE's cell-type calls on held-out donors of Kang et al. against a class-weighted logistic regression on the
same log-normalized genes (issue 29's comparison): four folds of held-out donor pairs, both models trained on the same
six donors per fold. Prints and writes per-fold balanced accuracy and per-class recall of both.

    python bench/bench_label_transfer.py --out bench/results/label_transfer_kang_cpu.json

It reads ``../shared/data/kang2018_kang_se.h5ad`` beside the repository. On 2 CPU cores it takes a few minutes; set
``--epochs`` lower for a quick look.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

KANG = ROOT.parent / "shared" / "data" / "kang2018_kang_se.h5ad"
FOLDS = [["101", "107"], ["1015", "1016"], ["1039", "1244"], ["1256", "1488"]]


def recall_per_class(truth: np.ndarray, called: np.ndarray) -> dict[str, float]:
    return {str(t): float((called[truth == t] == t).mean()) for t in np.unique(truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    import scanpy as sc
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from gmvae4p import keys
    from gmvae4p.data import load_cohort
    from gmvae4p.gmvae.model import GMVAE

    adata = load_cohort(KANG, patient_key="patient", cell_type_key="cell_type")
    adata.layers[keys.COUNTS] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    types = adata.obs["cell_type"].astype(str).to_numpy()
    patients = adata.obs["patient"].astype(str).to_numpy()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for fold in FOLDS:
            test = np.isin(patients, fold)
            start = time.perf_counter()
            reference = LogisticRegression(class_weight="balanced", C=0.1, max_iter=1000).fit(adata.X[~test],
                                                                                              types[~test])
            reference_calls = reference.predict(adata.X[test])
            reference_s = time.perf_counter() - start
            start = time.perf_counter()
            GMVAE(adata, use_highly_variable=False).fit(Path(folder) / fold[0], held_out_patients=fold,
                                                        epochs=args.epochs, log=None)
            gmvae_s = time.perf_counter() - start
            called = adata.obs[keys.GMVAE_CELL_TYPE].astype(str).to_numpy()[test]
            for name, calls, seconds in (("gmvae", called, gmvae_s), ("logistic_regression", reference_calls,
                                                                      reference_s)):
                rows.append({"fold": "+".join(fold), "model": name, "seconds": round(seconds, 1),
                             "balanced_accuracy": float(balanced_accuracy_score(types[test], calls)),
                             "recall": recall_per_class(types[test], calls)})
            print(pd.DataFrame(rows[-2:])[["fold", "model", "balanced_accuracy", "seconds"]].to_string(index=False),
                  flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby("model")["balanced_accuracy"].mean().to_dict()
    print("mean balanced accuracy over folds:", {k: round(v, 4) for k, v in summary.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.node(), "processor": platform.processor(),
                                    "epochs": args.epochs, "folds": rows, "mean_balanced_accuracy": summary},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
