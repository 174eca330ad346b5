"""gmvae4p: from single-cell counts of a patient cohort to a patient phenotype classifier.

Modules: :mod:`gmvae4p.data` (simulate, read, validate), :mod:`gmvae4p.preprocess`, :mod:`gmvae4p.plots`,
:mod:`gmvae4p.params` (parameters files), :mod:`gmvae4p.pipeline` (the papermill chain), :mod:`gmvae4p.keys`.
Submodules are imported on use, so ``import gmvae4p.data.simulate`` needs numpy, scipy and pandas only.
"""

__version__ = "0.1.0"
