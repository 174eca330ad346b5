"""The Gaussian-mixture VAE (stage 02).

config (settings) · prior (the mixture prior) · distributions (likelihoods) · reference (the model in its plain
form: dense counts, autograd) · module (the same model, fast: sparse counts, a hand-written backward) · kernels
(Triton kernels of the fast likelihood, for CUDA) · batches (sparse batches on the device) · trainset (the
training-set file) · train (loop and torchrun entry; ``backend`` picks the module) · launch (torchrun from a notebook)
· model (AnnData-facing: fit, embed, save, load).
"""
