"""Stage 04: the GMVAE4P patient classifier, its baselines and their patient-grouped evaluation, and the final model
for new patients (:mod:`gmvae4p.classify.deploy`)."""
