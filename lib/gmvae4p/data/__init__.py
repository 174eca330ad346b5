"""Cohort data: the simulator, reading, validation and atomic writes.

Names load on first use, so ``gmvae4p.data.simulate`` imports without anndata (the GPU benchmarks need that).
"""

import importlib

BLOCK_ROWS = 16_384
"""Rows per block where a cells' matrix is walked, copied or written in blocks: temporaries stay small beside it."""

_WHERE = {
    "SimulatedCohort": "simulate", "simulate_cohort": "simulate",
    "CohortError": "io", "atomic_path": "atomic", "check_counts": "io", "load_cohort": "io", "obs_column": "io",
    "read_h5ad": "io", "validate_cohort": "io", "write_csv": "io", "write_h5ad": "io", "x_on_disk": "io",
    "MappedArray": "io", "map_arrays": "io", "row_blocks": "io",
    "ligand_receptor_genes": "ligand_receptor", "ligand_receptor_table": "ligand_receptor",
}
__all__ = sorted([*_WHERE, "BLOCK_ROWS"])


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
