"""Stage 04: the GMVAE4P patient classifier, its baselines and their patient-grouped evaluation."""
