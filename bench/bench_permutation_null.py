"""The permutation null of some methods on a cohort's pseudobulk samples, with more permutations than stage 04 gives
its costly methods (``null_permutations_costly``), on a machine with more cores.

    python bench/bench_permutation_null.py PSEUDOBULK.h5ad POSITIVE_LABEL --methods gmvae4p --permutations 19 \\
        --n-jobs 8 --output DIR

Runs :func:`gmvae4p.classify.evaluate.permutation_null` with stage 04's defaults (``classify`` section of
``parameters/demo.yaml`` unless ``--parameters`` names another file) and writes ``DIR/null_permutations_FIRST.csv``
(method, permutation, auc) and ``DIR/run_FIRST.json`` (settings, machine, wall time). Imports neither scanpy nor the
notebooks, so it runs where only anndata, torch and scikit-learn are installed.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from gmvae4p.classify import evaluate  # noqa: E402
from gmvae4p.classify.cv import unit_table  # noqa: E402
from gmvae4p.classify.workers import FoldWorkers  # noqa: E402
from gmvae4p.params import check_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pseudobulk", help="stage 03's data/pseudobulk.h5ad")
    parser.add_argument("positive_label")
    parser.add_argument("--methods", nargs="+", default=["gmvae4p"])
    parser.add_argument("--permutations", type=int, default=19)
    parser.add_argument("--first", type=int, default=0, help="start at this permutation (to split a null into calls)")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() // 2)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    parser.add_argument("--parameters", default=str(Path(__file__).resolve().parents[1] / "parameters" / "demo.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    classify = (yaml.safe_load(Path(args.parameters).read_text()) or {}).get("classify", {})
    settings = check_section("classify", {**classify, "positive_label": args.positive_label}, where=args.parameters)
    samples = ad.read_h5ad(args.pseudobulk)
    units = unit_table(samples, args.positive_label)
    start = time.perf_counter()
    with FoldWorkers(samples, n_jobs=args.n_jobs) as workers:
        null = evaluate.permutation_null(
            samples, units, methods=args.methods, n_permutations=args.permutations,
            n_permutations_costly=args.permutations, n_folds=settings.n_folds,
            validation_fraction=settings.validation_fraction, workers=workers, config=settings,
            n_top_genes=settings.n_top_genes, n_top_interactions=settings.n_top_interactions,
            device=args.device, seed=args.seed, first=args.first)
    wall = time.perf_counter() - start
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    null.to_csv(out / f"null_permutations_{args.first}.csv", index=False)
    info = {"command": sys.argv, "wall_s": round(wall, 1), "machine": platform.platform(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "n_units": int(len(units)), "n_patients": int(units["patient"].nunique())}
    (out / f"run_{args.first}.json").write_text(json.dumps(info, indent=2))
    print(null.groupby("method")["auc"].describe().to_string())
    print(json.dumps(info))


if __name__ == "__main__":
    main()
