"""The Gaussian-mixture VAE: likelihoods (distributions), the pure torch module (module), sparse batches
(batches), the single-process training loop (train)."""
