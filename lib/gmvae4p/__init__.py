"""gmvae4p: from single-cell counts of a patient cohort to a patient phenotype classifier.

Modules: :mod:`gmvae4p.data` (simulate, read, validate), :mod:`gmvae4p.preprocess`, :mod:`gmvae4p.plots`,
:mod:`gmvae4p.params` (parameters files), :mod:`gmvae4p.pipeline` (the papermill chain), :mod:`gmvae4p.keys`.
Submodules are imported on use, so ``import gmvae4p.data.simulate`` needs numpy, scipy and pandas only.
"""

__version__ = "0.1.0"


def package_versions(names) -> dict[str, str | None]:
    """The installed version of each distribution in ``names`` (``None`` where it is not installed): what a run
    record and a model card say they ran with."""
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
