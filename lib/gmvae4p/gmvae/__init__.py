"""The Gaussian-mixture VAE (stage 02).

config (settings) · distributions (likelihoods) · module (pure torch) · batches (sparse batches on the device) ·
trainset (the training-set file) · train (loop and torchrun entry) · launch (torchrun from a notebook) ·
model (AnnData-facing: fit, embed, save, load).
"""
