"""What the COVID-19 cohort's `T_gd` cells (annotated in batch B3 only) express: the share with B-cell and with T-cell
transcripts, and their mean surface-protein levels (log1p of counts per 1,000 protein counts), beside B3's `T_Vd2`
(γδ T cells of every batch) and `B_Mem`. Usage: t_gd_markers.py (reads ../shared/data beside the repository)."""
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

a = ad.read_h5ad(Path(__file__).resolve().parents[4] / "shared/data/liu2021_covid_pbmc.h5ad")
kind, batch = a.obs["cell_type"].astype(str).to_numpy(), a.obs["batch"].astype(str).to_numpy()


def rna(gene):
    return np.asarray(a[:, gene].X.toarray()).ravel()


b_rna = (rna("MS4A1") + rna("CD79A") + rna("CD79B") + rna("CD19")) > 0
t_rna = (rna("CD3E") + rna("CD3D")) > 0
protein = a.obsm["protein_counts"]
library = protein.sum(1).to_numpy()


def adt(name):
    return np.log1p(protein[name].to_numpy() / library * 1e3)


rows = []
for name, mask in [("T_gd (B3)", kind == "T_gd"), ("T_Vd2 (B3)", (kind == "T_Vd2") & (batch == "B3")),
                   ("B_Mem (B3)", (kind == "B_Mem") & (batch == "B3"))]:
    rows.append({"annotated": name, "cells": int(mask.sum()), "B-cell RNA (MS4A1/CD79A/CD79B/CD19 > 0)": b_rna[mask].mean(),
                 "T-cell RNA (CD3E/CD3D > 0)": t_rna[mask].mean(), "ADT TCRgd": adt("ADT_TCRgd")[mask].mean(),
                 "ADT CD3": adt("ADT_CD3")[mask].mean(), "ADT CD19": adt("ADT_CD19")[mask].mean(),
                 "ADT CD20": adt("ADT_CD20")[mask].mean()})
print(pd.DataFrame(rows).round(2).to_string(index=False))
