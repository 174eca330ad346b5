"""The Gaussian-mixture VAE (stage 02).

config (settings) · distributions (likelihoods) · module (pure torch) · kernels (Triton kernels of the
likelihood's cells × genes part, for CUDA) · batches (sparse batches on the device) ·
trainset (the training-set file) · train (loop and torchrun entry) · launch (torchrun from a notebook) ·
model (AnnData-facing: fit, embed, save, load).
"""
