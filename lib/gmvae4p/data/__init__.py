"""Cohort data: the simulator, reading, validation and atomic writes."""

from .io import CohortError, atomic_path, check_counts, load_cohort, obs_column, validate_cohort, write_h5ad
from .simulate import SimulatedCohort, simulate_cohort

__all__ = ["CohortError", "SimulatedCohort", "atomic_path", "check_counts", "load_cohort", "obs_column",
           "simulate_cohort", "validate_cohort", "write_h5ad"]
