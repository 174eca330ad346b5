"""Where a run's artifacts go: ``outputs/<run>/{data,models,tables,figures,notebooks}`` and ``run.json``."""

from __future__ import annotations

import os
from pathlib import Path

PREPROCESSED = "preprocessed.h5ad"
GMVAE_CELLS = "gmvae.h5ad"
"""The preprocessed cells with the GMVAE's embedding keys (stage 02)."""
PSEUDOBULK = "pseudobulk.h5ad"
"""Pseudobulk samples and their modalities (stage 03)."""
RUN_RECORD = "run.json"


class RunLayout:
    """The folders of one run, created on first use."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        for folder in (self.data, self.models, self.tables, self.figures, self.notebooks):
            folder.mkdir(parents=True, exist_ok=True)

    data = property(lambda self: self.root / "data")
    models = property(lambda self: self.root / "models")
    tables = property(lambda self: self.root / "tables")
    figures = property(lambda self: self.root / "figures")
    notebooks = property(lambda self: self.root / "notebooks")
    run_record = property(lambda self: self.root / RUN_RECORD)
    preprocessed = property(lambda self: self.data / PREPROCESSED)
    gmvae_cells = property(lambda self: self.data / GMVAE_CELLS)
    pseudobulk = property(lambda self: self.data / PSEUDOBULK)
    gmvae = property(lambda self: self.models / "gmvae")
    """Training set, settings, checkpoint, ``model.pt`` and ``embedding.h5`` of the GMVAE."""
    gmvae_model = property(lambda self: self.gmvae / "model.pt")
    """The trained GMVAE (``GMVAE.load`` reads it; the final GMVAE4P keeps a copy for new patients' cells)."""
    final_model = property(lambda self: self.models / "gmvae4p")
    """The GMVAE4P fitted on every unit, for new patients (:mod:`gmvae4p.classify.deploy`)."""

    def table(self, name: str) -> Path:
        """``tables/<name>.csv``: ``folds`` (stage 04's outer folds, read by stages 05 and 06), ``table1_main`` …
        ``table5_compute``, ``predictions`` (out-of-fold, every method) and what stage 04 keeps for the figures
        (``gmvae4p_fusion``, ``gmvae4p_fused``, ``deployment``)."""
        return self.tables / f"{name}.csv"

    def require(self, path: Path, stage: str) -> Path:
        """``path`` if it exists, else an error naming the stage that writes it."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist: run stage {stage} with this output_dir first.")
        return Path(path)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"
