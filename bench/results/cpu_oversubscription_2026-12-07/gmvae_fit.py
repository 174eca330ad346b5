"""Stage 02's GMVAE fit (the demo's settings: zinb, 10 epochs, one torchrun rank) timed on a run's preprocessed cells,
alone or with UMAP's compile process beside it. Usage: gmvae_fit.py RUN {alone,umap_beside} [--one-thread]
(RUN: a chain's output folder with stage 01 done; --one-thread sets this process's torch threads, not the rank's).
The spinner runs of index.md started `python3 -c 'while True: pass'` in the background first."""

import argparse
import time

import anndata as ad
import torch
import yaml

import gmvae4p.embedding
from gmvae4p.gmvae.model import GMVAE, split_settings


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("mode", choices=["alone", "umap_beside"])
    parser.add_argument("--one-thread", action="store_true")
    args = parser.parse_args()
    settings = yaml.safe_load(open("parameters/demo.yaml"))["gmvae"]
    adata = ad.read_h5ad(f"{args.run}/data/preprocessed.h5ad")
    start = time.perf_counter()
    umap = gmvae4p.embedding.UMAPProcess(adata.n_obs) if args.mode == "umap_beside" else None
    if args.one_thread:
        torch.set_num_threads(1)
    model_settings, fit_settings = split_settings(settings)
    GMVAE(adata, **model_settings).fit(f"/tmp/gmvae_fit_{args.mode}", seed=0, **fit_settings)
    print(args.mode, "train s", round(time.perf_counter() - start, 1))
    if umap is not None:
        umap.close()


if __name__ == "__main__":  # UMAPProcess spawns: its child imports this file again
    main()
