"""The GMVAE's cell-type calls on held-out donors against a class-weighted logistic regression on the same
log-normalized genes (issue 29's comparison), on Kang et al. (four folds of held-out donor pairs) or the COVID-19
cohort (four donor-grouped folds). The logistic regression trains on every training donor; the GMVAE as stage 02
trains it, a fifth of them held out (its validation, and the calibration of its uncertainty), then annotates the test
donors' cells by :func:`gmvae4p.gmvae.model.transfer_labels`, reading no annotation of theirs. Per fold and model:
balanced accuracy and per-class recall; ``gmvae`` is the GMVAE's call (``obs["gmvae_cell_type"]``); ``gmvae+lr``
the mean of the two models' class probabilities; ``latent_knn`` and ``latent_lr`` call types from the GMVAE's latent
means of every training donor (15 distance-weighted neighbours, as scArches transfers labels; a class-weighted
logistic regression, the GMVAE's call without its held-out fifth and calibration). For the GMVAE's own call also the share of cells
that label transfer calls ``unknown`` (its calibrated uncertainty above the default threshold) and the balanced
accuracy of the others. Beside ``--out``: the GMVAE's confusion matrix over every fold's test donors.

    python bench/bench_label_transfer.py --data kang --out results.json [--epochs 20 --ce-weight 50]

Reads ``../shared/data/`` beside the repository (``--data-dir``); needs anndata, torch and scikit-learn (no scanpy), so it runs on the
device machine too (CUDA when there).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

DATA = {"kang": ("kang2018_kang_se.h5ad", "patient", "cell_type"),
        "covid": ("liu2021_covid_pbmc.h5ad", "patient", "cell_type")}
KANG_FOLDS = [["101", "107"], ["1015", "1016"], ["1039", "1244"], ["1256", "1488"]]


def recall_per_class(truth: np.ndarray, called: np.ndarray) -> dict[str, float]:
    return {str(t): float((called[truth == t] == t).mean()) for t in np.unique(truth)}


def donor_folds(name: str, patients: np.ndarray) -> list[list[str]]:
    if name == "kang":
        return KANG_FOLDS
    donors = np.random.default_rng(0).permutation(np.unique(patients))
    return [list(part) for part in np.array_split(donors, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=list(DATA), default="kang")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ce-weight", type=float, default=50.0)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    from gmvae4p import keys
    from gmvae4p.data import load_cohort
    from gmvae4p.gmvae.model import GMVAE, transfer_labels

    name, patient_key, type_key = DATA[args.data]
    adata = load_cohort(args.data_dir / name, patient_key=patient_key, cell_type_key=type_key)
    counts = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.layers[keys.COUNTS] = counts
    library = np.maximum(np.asarray(counts.sum(1)).ravel(), 1)
    adata.X = sp.diags(1e4 / library) @ counts
    adata.X.data = np.log1p(adata.X.data)
    types = adata.obs[type_key].astype(str).to_numpy()
    patients = adata.obs[patient_key].astype(str).to_numpy()
    rows, calibrations, pooled = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for fold in donor_folds(args.data, patients):
            test = np.isin(patients, fold)
            start = time.perf_counter()
            reference = LogisticRegression(class_weight="balanced", C=0.1, max_iter=1000).fit(adata.X[~test],
                                                                                              types[~test])
            reference_proba = reference.predict_proba(adata.X[test])
            reference_s = time.perf_counter() - start
            start = time.perf_counter()  # as stage 02 trains it: a fifth of the training donors held out
            training = adata[~test].copy()
            model = GMVAE(training, use_highly_variable=False).fit(Path(folder) / fold[0], epochs=args.epochs,
                                                                   ce_weight=args.ce_weight,
                                                                   batch_size=args.batch_size, log=None)
            query = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[test]), var=pd.DataFrame(index=adata.var_names),
                               layers={keys.COUNTS: counts[test]})  # no annotation
            transfer_labels(model.save(Path(folder) / f"{fold[0]}.pt"), query)
            gmvae_s = time.perf_counter() - start
            calibrations.append(model.caller.calibration)
            gmvae_proba = pd.DataFrame(query.obsm[keys.GMVAE_PROBA], columns=model.component_names)
            both = (gmvae_proba[list(reference.classes_)].to_numpy() + reference_proba) / 2
            start = time.perf_counter()
            knn = KNeighborsClassifier(15, weights="distance", n_jobs=-1).fit(training.obsm[keys.X_GMVAE],
                                                                               types[~test])
            knn_calls = knn.predict(query.obsm[keys.X_GMVAE])
            knn_s = time.perf_counter() - start
            start = time.perf_counter()
            latent_lr = LogisticRegression(class_weight="balanced", max_iter=1000).fit(training.obsm[keys.X_GMVAE],
                                                                                       types[~test])
            latent_lr_calls = latent_lr.predict(query.obsm[keys.X_GMVAE])
            latent_lr_s = time.perf_counter() - start
            train_counts = pd.Series(types[~test]).value_counts()
            gmvae_calls = gmvae_proba.columns.to_numpy()[gmvae_proba.to_numpy().argmax(1)]
            certain = query.obs[keys.GMVAE_CELL_TYPE].astype(str).to_numpy() != keys.UNKNOWN
            pooled.append(pd.DataFrame({"patient": patients[test], "cell_type": types[test], "called": gmvae_calls}))
            for name, calls, seconds in (
                    ("gmvae", gmvae_calls, gmvae_s),
                    ("logistic_regression", reference.classes_[reference_proba.argmax(1)], reference_s),
                    ("gmvae+lr", reference.classes_[both.argmax(1)], gmvae_s + reference_s),
                    ("latent_knn", knn_calls, gmvae_s + knn_s),
                    ("latent_lr", latent_lr_calls, gmvae_s + latent_lr_s)):
                recall = recall_per_class(types[test], calls)
                rows.append({"fold": "+".join(fold), "model": name, "seconds": round(seconds, 1),
                             "balanced_accuracy": float(balanced_accuracy_score(types[test], calls)),
                             "min_recall_50_training_cells": min(
                                 r for t, r in recall.items() if train_counts.get(t, 0) >= 50),
                             "recall": recall})
            unknown = pd.Series(~certain).groupby(types[test]).mean()
            rows[-5].update({"unknown_share": float(1 - certain.mean()),
                             "balanced_accuracy_of_called": float(balanced_accuracy_score(types[test][certain],
                                                                                          gmvae_calls[certain])),
                             "unknown_share_per_class": {str(t): float(v) for t, v in unknown.items()}})
            print(pd.DataFrame(rows[-5:])[["fold", "model", "balanced_accuracy", "min_recall_50_training_cells",
                                           "seconds"]].to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    columns = ["balanced_accuracy", "min_recall_50_training_cells", "unknown_share", "balanced_accuracy_of_called"]
    summary = table.groupby("model")[columns].mean()
    print(summary.round(4).to_string())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": args.data, "machine": platform.node(), "epochs": args.epochs,
                                    "calibration": calibrations,
                                    "ce_weight": args.ce_weight, "batch_size": args.batch_size, "folds": rows,
                                    "mean": summary.to_dict(orient="index")}, indent=1) + "\n")
    confusion_figure(pd.concat(pooled, ignore_index=True), args.out.parent, f"label_transfer_{args.data}_confusion")


def confusion_figure(pooled: pd.DataFrame, folder: Path, name: str) -> None:
    """The GMVAE's calls against the annotation on every fold's test donors (stage 02's confusion figure): PNG, PDF
    and the table of counts, recall and precision, as ``folder/name.*``."""
    import matplotlib

    matplotlib.use("Agg")
    from gmvae4p import keys, plots

    types = sorted(pooled["cell_type"].unique())
    cells = ad.AnnData(obs=pd.DataFrame({"patient": pooled["patient"].to_numpy(),
                                         "cell_type": pooled["cell_type"].to_numpy(),
                                         keys.GMVAE_CELL_TYPE: pd.Categorical(pooled["called"], categories=types),
                                         keys.GMVAE_HELD_OUT: True}, index=pooled.index.astype(str)),
                       uns={keys.UNS: {"columns": {"patient": "patient", "cell_type": "cell_type"}}})
    fig, table = plots.cell_type_confusion(cells)
    plots.save_figure(fig, table, folder, name)


if __name__ == "__main__":
    main()
