"""Ligand–receptor pairs from liana's curated resources, read from the installed liana package (no network, and
without importing liana itself)."""

from __future__ import annotations

import functools
import importlib.metadata

import pandas as pd

RESOURCE_FILE = "liana/resource/omni_resource.csv"


@functools.cache
def ligand_receptor_table(resource: str = "consensus") -> pd.DataFrame:
    """Columns ``ligand``, ``receptor`` (a complex as ``A_B``), one row per pair of liana's ``resource``."""
    try:
        path = importlib.metadata.distribution("liana").locate_file(RESOURCE_FILE)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("ligand–receptor pairs come from liana's resource: pip install liana") from None
    table = pd.read_csv(path, index_col=0)
    table = table[table["resource"] == resource]
    if table.empty:
        raise ValueError(f"liana has no ligand–receptor resource {resource!r}.")
    pairs = table[["source_genesymbol", "target_genesymbol"]].set_axis(["ligand", "receptor"], axis=1)
    return pairs.drop_duplicates().reset_index(drop=True)


def ligand_receptor_genes(n_genes: int, resource: str = "consensus") -> list[str]:
    """About ``n_genes`` gene symbols that complete whole pairs: the subunits of the resource's pairs, in its order,
    until adding the next pair would pass ``n_genes``."""
    genes: dict[str, None] = {}
    for ligand, receptor in ligand_receptor_table(resource).itertuples(index=False):
        new = [g for g in (*ligand.split("_"), *receptor.split("_")) if g not in genes]
        if len(genes) + len(new) > n_genes:
            break
        genes.update(dict.fromkeys(new))
    return list(genes)
