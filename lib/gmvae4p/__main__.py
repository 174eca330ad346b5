"""``python -m gmvae4p run PARAMETERS.yaml``: run the stage notebooks on a parameters file;
``python -m gmvae4p benchmark BENCHMARK.yaml``: run stages 01–04 on many cohorts, one table of every method."""

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
