"""Train on some batches of a real cohort, then score the other batches' bulk counts with ``gmvae4p predict``.

    python bench/bench_transfer.py --output DIR [--parameters parameters/covid.yaml] [--train-batches B1 B2]

1. The cells of the donors in ``--train-batches`` go to ``DIR/work/train.h5ad``; every other donor's cells are summed
   per sample into ``DIR/test_counts.tsv`` (raw counts, genes × samples, as a bulk pipeline writes them) with their
   labels in ``DIR/test_labels.csv``. No test donor is in the training file.
2. ``python -m gmvae4p run`` stages 01–04 on the training file with the parameters file's settings (classify.methods:
   GMVAE4P and the logistic regression; no Table 2, no permutation null, no mse GMVAE).
3. ``python -m gmvae4p predict`` on the test table as it is; on a copy with 30 % of the gene symbols replaced (the
   default minimum overlap must refuse it); on that copy with ``--min-overlap 0.6``; on the test donors' cells
   (``.h5ad``, no cell-type annotation given: the scRNA mode reads the GMVAE's calls).
4. ``DIR/transfer.json``: AUC [95 % CI over donors], balanced accuracy at the saved threshold and ECE of the bulk
   predictions and of the cells' scRNA mode, each as cross-validated and calibrated, what each call printed, the overlap reported, wall times, the machine. ``DIR/predictions.csv`` and the run's
   Table 1 and model card beside it.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
from gmvae4p.classify.metrics import binary_metrics  # noqa: E402


def split_cohort(params: dict, train_batches: list[str], work: Path, out: Path) -> dict:
    """Write the training cells and the test samples' summed counts; return what was split."""
    data = params["data"]
    cells = ad.read_h5ad(data["path"])
    donors = cells.obs.groupby(data["patient_key"], observed=True)[data["batch_key"]].agg(lambda b: set(b.astype(str)))
    if (donors.map(len) > 1).any():
        raise SystemExit("a donor spans several batches: split by donor instead")
    train_donors = [d for d, batches in donors.items() if batches <= set(train_batches)]
    is_train = cells.obs[data["patient_key"]].isin(train_donors).to_numpy()
    cells[is_train].copy().write_h5ad(work / "train.h5ad")
    test = cells[~is_train]
    test.copy().write_h5ad(work / "test_cells.h5ad")
    samples = test.obs[data["sample_key"]].astype(str)
    names = sorted(samples.unique())
    indicator = sp.csr_matrix((np.ones(test.n_obs), (pd.Categorical(samples, categories=names).codes,
                                                     np.arange(test.n_obs))), shape=(len(names), test.n_obs))
    counts = np.asarray((indicator @ sp.csr_matrix(test.X)).todense()).round().astype(np.int64)
    pd.DataFrame(counts.T, index=test.var_names, columns=names).rename_axis("gene").to_csv(out / "test_counts.tsv",
                                                                                         sep="\t")
    labels = test.obs[[data["sample_key"], data["patient_key"], data["label_key"]]].astype(str).drop_duplicates()
    labels.columns = ["sample", "patient", "label"]
    labels.set_index("sample").loc[names].reset_index().to_csv(out / "test_labels.csv", index=False)
    return {"train_batches": train_batches, "train_donors": len(train_donors), "train_cells": int(is_train.sum()),
            "test_donors": int(test.obs[data["patient_key"]].nunique()), "test_samples": len(names),
            "test_cells": int(test.n_obs)}


def replace_symbols(table: Path, share: float, target: Path, seed: int = 0) -> None:
    counts = pd.read_csv(table, sep="\t", index_col=0)
    rng = np.random.default_rng(seed)
    replaced = rng.choice(len(counts), round(share * len(counts)), replace=False)
    genes = counts.index.to_numpy(dtype=object)
    genes[replaced] = [f"UNKNOWN{i}" for i in range(len(replaced))]
    counts.index = pd.Index(genes, name="gene")
    counts.to_csv(target, sep="\t")


def call(*args: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gmvae4p", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    return {"command": " ".join(["python -m gmvae4p", *args]), "returncode": done.returncode,
            "wall_s": round(time.perf_counter() - start, 1),
            "said": (done.stdout + done.stderr).strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parameters", default=str(ROOT / "parameters" / "covid.yaml"))
    parser.add_argument("--train-batches", nargs="+", default=["B1", "B2"])
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    out = Path(args.output).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(Path(args.parameters).read_text())
    params["data"]["path"] = str((ROOT / params["data"]["path"]).resolve())  # as `gmvae4p run` from the repository
    split = split_cohort(params, args.train_batches, work, out)
    params["data"]["path"] = str(work / "train.h5ad")
    params["run_name"] = "transfer"
    params.setdefault("gmvae", {})["mse_for_ablation"] = False
    params.setdefault("classify", {}).update(methods=["gmvae4p", "logistic_regression"], small_cohort_sizes=[],
                                             null_permutations=0, null_permutations_costly=0)
    (work / "parameters.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run = work / "run"
    model = run / "models" / "gmvae4p"
    record = {"split": split, "parameters": params}
    record["train"] = call("run", str(work / "parameters.yaml"), "--output-dir", str(run), "--stages", "01", "02", "03",
                           "04", "--quiet")
    record["predict"] = call("predict", str(model), str(out / "test_counts.tsv"), "--output",
                             str(out / "predictions.csv"))
    replace_symbols(out / "test_counts.tsv", 0.3, work / "test_counts_30pct_replaced.tsv")
    record["predict_30pct_replaced"] = call("predict", str(model), str(work / "test_counts_30pct_replaced.tsv"),
                                            "--output", str(work / "refused.csv"))
    record["predict_30pct_replaced_min_overlap_0.6"] = call(
        "predict", str(model), str(work / "test_counts_30pct_replaced.tsv"), "--output",
        str(out / "predictions_30pct_replaced.csv"), "--min-overlap", "0.6")

    record["predict_cells"] = call("predict", str(model), str(work / "test_cells.h5ad"), "--sample-key",
                                   params["data"]["sample_key"], "--output", str(out / "predictions_cells.csv"))

    labels = pd.read_csv(out / "test_labels.csv").set_index("sample")
    positive = params["classify"]["positive_label"]
    for name, table, column in (("metrics", "predictions.csv", "probability"),
                                ("metrics_calibrated", "predictions.csv", "probability_calibrated"),
                                ("metrics_cells_scrna_mode", "predictions_cells.csv", "probability_scrna"),
                                ("metrics_cells_scrna_mode_calibrated", "predictions_cells.csv",
                                 "probability_scrna_calibrated")):
        predictions = pd.read_csv(out / table).set_index("sample").join(labels)
        y = (predictions["label"] == positive).to_numpy(int)
        metrics = binary_metrics(y, predictions[column].to_numpy(), patients=predictions["patient"].to_numpy())
        called = (predictions[column] > 0.5).to_numpy(int)  # the saved threshold
        metrics["balanced_accuracy_at_saved_threshold"] = float(
            np.mean([(called[y == k] == k).mean() for k in (0, 1)]))
        record[name] = {k: float(v) for k, v in metrics.items()}
    replaced = pd.read_csv(out / "predictions_30pct_replaced.csv")
    record["genes_found_30pct_replaced"] = float(replaced["genes_found"].iloc[0])
    record["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                         "cpus": os.cpu_count(), "python": platform.python_version()}
    for name in ("table1_main.csv", "folds.csv"):
        shutil.copy(run / "tables" / name, out / name)
    shutil.copy(model / "model_card.md", out / "model_card.md")
    (out / "transfer.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: record[k] for k in ("split", "metrics", "metrics_calibrated", "metrics_cells_scrna_mode",
                                             "metrics_cells_scrna_mode_calibrated", "genes_found_30pct_replaced")},
                     indent=2))


if __name__ == "__main__":
    main()
