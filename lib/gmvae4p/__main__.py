"""``python -m gmvae4p run PARAMETERS.yaml``: run the stage notebooks on a parameters file;
``python -m gmvae4p benchmark BENCHMARK.yaml``: run stages 01–04 on many cohorts, one table of every method;
``python -m gmvae4p predict MODEL_DIR INPUT --output predictions.csv``: score new samples with a saved GMVAE4P;
``python -m gmvae4p annotate GMVAE.pt CELLS.h5ad --output annotated.h5ad``: name new cells' types (label transfer)."""

from __future__ import annotations

import argparse
import sys

from .data import CohortError
from .params import ParameterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmvae4p", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the stage notebooks with papermill")
    run.add_argument("parameters", help="a parameters file, e.g. parameters/demo.yaml")
    run.add_argument("--output-dir", help="run folder (default: outputs/<run_name>)")
    run.add_argument("--stages", nargs="+", help="stages to run, by number or name (default: every stage)")
    run.add_argument("--quiet", action="store_true", help="do not echo the notebooks' output")
    bench = commands.add_parser("benchmark", help="run stages 01-04 on the cohorts of a benchmark file")
    bench.add_argument("benchmark", help="a benchmark file, e.g. parameters/benchmark.yaml")
    bench.add_argument("--cohorts", nargs="+", help="cohorts to run, by name (default: every cohort)")
    bench.add_argument("--output-dir", help="benchmark folder (default: outputs/<file name>)")
    bench.add_argument("--stages", nargs="+", help="stages to run in each cohort folder (default: the file's); "
                       "e.g. --stages 04 reruns the classifiers on stages 01-03 already there")
    predict = commands.add_parser("predict", help="score new samples' bulk counts with a saved GMVAE4P")
    predict.add_argument("model", help="a saved model folder, e.g. outputs/demo/models/gmvae4p")
    predict.add_argument("input", help="raw counts: a .tsv/.csv table (genes × samples or samples × genes) or an "
                         ".h5ad of cells (summed per --sample-key)")
    predict.add_argument("--output", required=True, help="the CSV to write (one row per sample)")
    predict.add_argument("--sample-key", help="with an .h5ad: the obs column naming each cell's sample")
    predict.add_argument("--cell-type-key", help="with an .h5ad: the obs column of cell types for the scRNA mode "
                         "(default: the GMVAE's call)")
    predict.add_argument("--min-overlap", type=float, help="share of the model's genes the input must have "
                         "(default: the model's, 0.8)")
    predict.add_argument("--normalized", action="store_true", help="the input holds normalized values (log-CPM "
                         "or similar), not raw counts: score them as they are")
    annotate = commands.add_parser("annotate", help="name the cell types of new cells with a saved GMVAE")
    annotate.add_argument("model", help="a saved GMVAE, e.g. outputs/demo/models/gmvae/model.pt or a GMVAE4P "
                          "bundle's gmvae.pt")
    annotate.add_argument("input", help="an .h5ad of cells, raw counts in layers['counts'] or X")
    annotate.add_argument("--output", required=True, help="the .h5ad to write: the cells with the GMVAE's keys")
    annotate.add_argument("--max-uncertainty", type=float, help="call a cell 'unknown' above this 1 - max q(y|x) "
                          "(default 0.5)")
    args = parser.parse_args(argv)
    if args.command == "predict":
        return _predict(args)
    if args.command == "annotate":
        return _annotate(args)

    from .pipeline import StageFailed, run as run_chain

    try:
        if args.command == "benchmark":
            from .benchmark import run as run_benchmark

            folder = run_benchmark(args.benchmark, cohorts=args.cohorts, output_dir=args.output_dir,
                                   stages=args.stages)
            print(f"gmvae4p: benchmark complete: {folder / 'index.md'}")
            return 0
        folder = run_chain(args.parameters, output_dir=args.output_dir, stages=args.stages,
                           log_output=not args.quiet)
    except (ParameterError, CohortError) as err:
        print(f"gmvae4p: {err}", file=sys.stderr)
        return 2
    except StageFailed as err:
        print(f"gmvae4p: {err}", file=sys.stderr)
        return 1
    print(f"gmvae4p: run complete: {folder}")
    return 0


def _predict(args) -> int:
    from .classify import deploy
    from .data import write_csv

    try:
        saved = deploy.load(args.model)
        predictions, notes = deploy.score(saved, args.input, sample_key=args.sample_key,
                                          cell_type_key=args.cell_type_key, min_overlap=args.min_overlap,
                                          normalized=args.normalized)
        for note in notes:
            print(f"gmvae4p: note: {note}")
        if args.normalized:
            print("gmvae4p: note: --normalized: the values are scored as they are, as if they were log-CPM.")
    except (deploy.InputError, FileNotFoundError) as err:
        print(f"gmvae4p: {err}", file=sys.stderr)
        return 2
    write_csv(predictions, args.output)
    found = predictions["genes_found"].iloc[0]
    print(f"gmvae4p: {len(predictions)} samples scored ({found:.0%} of the model's genes found): {args.output}")
    return 0


def _annotate(args) -> int:
    import anndata as ad

    from . import keys
    from .data import write_h5ad
    from .gmvae.model import transfer_labels

    try:
        cells = ad.read_h5ad(args.input)
        if keys.COUNTS not in cells.layers:  # raw counts in X, as a count matrix is often shared
            cells.layers[keys.COUNTS] = cells.X
        settings = {} if args.max_uncertainty is None else {"max_uncertainty": args.max_uncertainty}
        transfer_labels(args.model, cells, **settings)
    except (ValueError, KeyError, FileNotFoundError, OSError) as err:
        print(f"gmvae4p: {err}", file=sys.stderr)
        return 2
    write_h5ad(cells, args.output)
    called = cells.obs[keys.GMVAE_CELL_TYPE]
    print(f"gmvae4p: {cells.n_obs} cells annotated, {int((called == keys.UNKNOWN).sum())} unknown: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
