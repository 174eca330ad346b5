"""Figures. Each function returns ``(Figure, DataFrame)``: the figure and the data its panels plot, so a notebook
saves both (:func:`save_figure`) and no plotted value exists only inside a picture."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np
import pandas as pd
import umap

from . import keys
from .data import atomic_path, obs_column, write_csv

MAX_POINTS = 20_000
"""Cells drawn at most per cell-level figure; the figure says when it shows a subsample."""


def qc_overview(adata: ad.AnnData, *, min_genes: int, max_pct_mito: float | None, seed: int = 0):
    """Genes per cell, mitochondrial share and counts per cell before filtering, with the QC thresholds.

    Needs :func:`gmvae4p.preprocess.qc_metrics` to have run.
    """
    missing = [k for k in (keys.N_GENES, keys.TOTAL_COUNTS, keys.PCT_MITO) if k not in adata.obs]
    if missing:
        raise KeyError(f"adata.obs lacks {missing}: run gmvae4p.preprocess.qc_metrics first.")
    cells = _subsample(adata.n_obs, seed)
    data = adata.obs.iloc[cells][[keys.N_GENES, keys.TOTAL_COUNTS, keys.PCT_MITO]].copy()
    removed = data[keys.N_GENES] < min_genes
    if max_pct_mito is not None:
        removed |= data[keys.PCT_MITO] > max_pct_mito
    data["removed_by_qc"] = removed.to_numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    axes[0].hist(data[keys.N_GENES], bins=60, color="0.35")
    axes[0].axvline(min_genes, color="crimson", ls="--", label=f"min_genes = {min_genes}")
    axes[0].set(xlabel="genes detected per cell", ylabel="cells")
    axes[1].hist(data[keys.PCT_MITO], bins=60, color="0.35", log=True)  # log: the few damaged cells stay visible
    if max_pct_mito is not None:
        axes[1].axvline(max_pct_mito, color="crimson", ls="--", label=f"max_pct_mito = {max_pct_mito:g}")
    axes[1].set(xlabel="% mitochondrial counts", ylabel="cells")
    kept = ~data["removed_by_qc"]
    axes[2].scatter(data.loc[kept, keys.TOTAL_COUNTS], data.loc[kept, keys.N_GENES], s=2, alpha=0.4,
                    color="0.35", label="kept", rasterized=True)
    axes[2].scatter(data.loc[~kept, keys.TOTAL_COUNTS], data.loc[~kept, keys.N_GENES], s=4, alpha=0.8,
                    color="crimson", label="removed", rasterized=True)
    axes[2].set(xscale="log", yscale="log", xlabel="counts per cell", ylabel="genes detected per cell")
    for axis in (axes[2].xaxis, axes[2].yaxis):
        axis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=8)
    shown = f"{len(cells):,} of {adata.n_obs:,} cells" if len(cells) < adata.n_obs else f"{adata.n_obs:,} cells"
    fig.suptitle(f"Quality control before filtering ({shown}; {int(data['removed_by_qc'].sum()):,} shown "
                 "would be removed)")
    return fig, data


def gmvae_training(history: dict[str, list]):
    """Per-epoch loss terms and cell-type accuracy (training cells, and held-out patients when there were any).

    ``history``: ``adata.uns["gmvae"]["history"]`` (one list per metric).
    """
    data = pd.DataFrame(history).set_index("epoch")
    terms = [t for t in ("loss", "recon", "kl", "ce") if t in data]
    fig, axes = plt.subplots(1, len(terms) + 1, figsize=(3.2 * (len(terms) + 1), 3.2), layout="constrained")
    for ax, term in zip(axes, terms):
        ax.plot(data.index, data[term], marker="o", ms=3, color="0.25")
        ax.set(title=term, xlabel="epoch")
    accuracy = axes[-1]
    accuracy.plot(data.index, data["acc"], marker="o", ms=3, color="0.25", label="training cells")
    if "val_acc" in data:
        accuracy.plot(data.index, data["val_acc"], marker="o", ms=3, color="crimson", label="held-out patients")
    accuracy.set(title="cell-type accuracy", xlabel="epoch", ylim=(0, 1.02))
    accuracy.legend(frameon=False, fontsize=8)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("GMVAE training (per-cell means over the epoch)")
    return fig, data


def cell_type_confusion(adata: ad.AnnData):
    """Annotated vs called cell type on held-out patients' cells, rows normalized (the diagonal is each type's
    recall); the table also holds cell counts, recall and precision per type."""
    if keys.GMVAE_CELL_TYPE not in adata.obs:
        raise KeyError(f"adata.obs lacks {keys.GMVAE_CELL_TYPE!r}: train the GMVAE (stage 02) first.")
    held = adata.obs[keys.GMVAE_HELD_OUT].to_numpy(bool)
    if not held.any():
        raise ValueError("no cell belongs to a held-out patient (validation_fraction = 0): nothing to show.")
    components = list(adata.obs[keys.GMVAE_CELL_TYPE].cat.categories)
    annotated = pd.Categorical(adata.obs[obs_column(adata, "cell_type")].astype(str)[held], categories=components)
    called = pd.Categorical(adata.obs[keys.GMVAE_CELL_TYPE][held], categories=components)
    counts = pd.crosstab(pd.Series(annotated, name="annotated"), pd.Series(called, name="called"), dropna=False)
    counts = counts.reindex(index=components, columns=components, fill_value=0)
    fractions = counts.div(counts.sum(1).replace(0, np.nan), axis=0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(components), 0.8 + 0.5 * len(components)),
                           layout="constrained")
    image = ax.imshow(fractions.to_numpy(), cmap="Greys", vmin=0, vmax=1)
    for i in range(len(components)):
        for j in range(len(components)):
            if counts.iat[i, j]:
                value = fractions.iat[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    ax.set_xticks(range(len(components)), components, rotation=45, ha="right")
    ax.set_yticks(range(len(components)), [f"{c} ({n:,})" for c, n in zip(components, counts.sum(1))])
    ax.set(xlabel="called by the GMVAE", ylabel="annotated (cells)")
    fig.colorbar(image, ax=ax, shrink=0.7, label="fraction of annotated cells")
    patients = adata.obs[obs_column(adata, "patient")][held].nunique()
    fig.suptitle(f"Cell-type calls on {patients} held-out patients ({int(held.sum()):,} cells)")
    table = counts.copy()
    table["cells"] = counts.sum(1)
    table["recall"] = np.diag(counts) / counts.sum(1).replace(0, np.nan)
    table["precision"] = np.diag(counts) / counts.sum(0).replace(0, np.nan).to_numpy()
    return fig, table


def latent_umap(adata: ad.AnnData, *, color: list[str], seed: int = 0):
    """UMAP of ``obsm["X_gmvae"]`` on at most :data:`MAX_POINTS` cells, one panel per ``obs`` column in ``color``."""
    if keys.X_GMVAE not in adata.obsm:
        raise KeyError(f"adata.obsm lacks {keys.X_GMVAE!r}: train the GMVAE (stage 02) first.")
    cells = _subsample(adata.n_obs, seed)
    # umap-learn directly: scanpy 1.11's neighbors calls csr_array.getnnz, which scipy 1.17 removed
    coordinates = umap.UMAP(n_neighbors=15, random_state=seed).fit_transform(adata.obsm[keys.X_GMVAE][cells])
    obs = adata.obs.iloc[cells][color]
    data = pd.DataFrame(coordinates, index=obs.index, columns=["UMAP1", "UMAP2"]).join(obs)
    fig, axes = plt.subplots(1, len(color), figsize=(5.2 * len(color), 4.4), layout="constrained", squeeze=False)
    for ax, column in zip(axes[0], color):
        groups = data[column].astype("category")
        palette = plt.get_cmap("tab10" if len(groups.cat.categories) <= 10 else "tab20")
        for i, group in enumerate(groups.cat.categories):
            where = (groups == group).to_numpy()
            ax.scatter(data["UMAP1"][where], data["UMAP2"][where], s=2, alpha=0.6, color=palette(i % palette.N),
                       label=str(group), rasterized=True)
        ax.set(title=column, xticks=[], yticks=[], xlabel="UMAP1", ylabel="UMAP2")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=7, markerscale=4, loc="center left", bbox_to_anchor=(1, 0.5))
    shown = f"{len(cells):,} of {adata.n_obs:,} cells" if len(cells) < adata.n_obs else f"{adata.n_obs:,} cells"
    fig.suptitle(f"GMVAE latent space (UMAP of E[z|x], {shown})")
    return fig, data


def unit_composition(samples: ad.AnnData):
    """Stacked bars of each unit's true cell-type composition (its whole-unit sample), units grouped by label."""
    whole = samples.obs[keys.KIND] == "whole"
    data = samples.obsm[keys.COMPOSITION][whole.to_numpy()].copy()
    data.index = samples.obs.loc[whole, "unit"].astype(str).to_numpy()
    data.insert(0, "label", _sample_labels(samples, whole.to_numpy()))
    data = data.sort_values(["label", *data.columns[1:2]])
    groups = list(dict.fromkeys(data["label"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(min(16, 2 + 0.12 * len(data)), 4), sharey=True,
                             layout="constrained", width_ratios=[(data["label"] == g).sum() for g in groups],
                             squeeze=False)
    colors = plt.get_cmap("tab10" if data.shape[1] <= 11 else "tab20").colors
    for ax, group in zip(axes[0], groups):
        part = data[data["label"] == group].drop(columns="label")
        bottom = np.zeros(len(part))
        for k, cell_type in enumerate(part.columns):
            ax.bar(np.arange(len(part)), part[cell_type], bottom=bottom, width=1.0, color=colors[k % len(colors)],
                   label=cell_type)
            bottom += part[cell_type].to_numpy()
        ax.set(title=f"{group} ({len(part)} units)", xticks=[], xlim=(-0.5, len(part) - 0.5), xlabel="units")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel("fraction of the unit's cells")
    axes[0][-1].legend(frameon=False, fontsize=8, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.suptitle("Cell-type composition per unit")
    return fig, data


def state_heatmap(samples: ad.AnnData):
    """Mean GMVAE z-score of each (cell type, latent dimension) over mixture samples, one column block per label:
    where the labels' cell states differ."""
    names = samples.uns[keys.UNS_PSEUDOBULK]["state_features"]
    mixture = (samples.obs[keys.KIND] == "mixture").to_numpy()
    values = pd.DataFrame(samples.obsm[keys.STATES][mixture], columns=names)
    label = _sample_labels(samples, mixture)
    means = values.groupby(label).mean().T  # features × labels (NaN, missing types, left out of each mean)
    cell_type = means.index.str.split("|").str[0]
    dims = means.index.str.split("|").str[1]
    data = pd.concat({g: means[g].set_axis(pd.MultiIndex.from_arrays([cell_type, dims])).unstack()
                      for g in means.columns}, axis=1)  # cell types × (label, dim)
    data = data.reindex(list(dict.fromkeys(cell_type)))
    limit = float(np.nanmax(np.abs(data.to_numpy()))) or 1.0
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.18 * data.shape[1]), 1.2 + 0.35 * len(data)),
                           layout="constrained")
    image = ax.imshow(data.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                      interpolation="nearest")
    ax.set_yticks(np.arange(len(data)), data.index)
    n_dims = len(data.columns) // len(means.columns)
    ax.set_xticks([n_dims * (i + 0.5) - 0.5 for i in range(len(means.columns))], list(means.columns))
    for i in range(1, len(means.columns)):
        ax.axvline(n_dims * i - 0.5, color="k", lw=1)
    ax.set_xlabel(f"label (each block: {n_dims} latent dimensions)")
    fig.colorbar(image, ax=ax, label="mean z-score of drawn cells", shrink=0.8)
    fig.suptitle("Cell-type states by label (mixture samples)")
    data.columns = [f"{g}|{d}" for g, d in data.columns]
    return fig, data


def top_communication(samples: ad.AnnData, *, n_top: int = 20):
    """The ``n_top`` ligand–receptor interactions with the highest mean score over mixture samples, per label."""
    names = samples.uns[keys.UNS_PSEUDOBULK]["communication_features"]
    mixture = (samples.obs[keys.KIND] == "mixture").to_numpy()
    values = samples.obsm[keys.COMMUNICATION][mixture]
    label = _sample_labels(samples, mixture)
    overall = np.nanmean(values, axis=0) if len(names) else np.array([])
    top = np.argsort(-np.nan_to_num(overall, nan=-np.inf))[:n_top]
    data = pd.DataFrame({g: np.nanmean(values[label == g][:, top], axis=0) for g in dict.fromkeys(label)},
                        index=[names[i] for i in top])
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * max(len(data), 1)), layout="constrained")
    positions = np.arange(len(data))
    width = 0.8 / max(len(data.columns), 1)
    for i, group in enumerate(data.columns):
        ax.barh(positions + i * width, data[group], height=width, label=group)
    ax.set_yticks(positions + 0.4 - width / 2, data.index, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ligand × receptor mean log-CPM (sender → receiver)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8)
    fig.suptitle(f"Top {len(data)} of {len(names):,} ligand–receptor interactions (mixture samples)")
    return fig, data


def method_auc(table: pd.DataFrame, *, null: pd.DataFrame | None = None):
    """Per method, the per-unit ROC-AUC with its 95 % CI (Table 1), the null control's beside it when given; the
    simulator's oracle as a dashed line and chance as a dotted one."""
    oracle = table["method"].str.startswith("oracle")
    methods = table.loc[~oracle, "method"].tolist()
    data = table.loc[~oracle, ["method", "auc", "auc_low", "auc_high"]].assign(labels="real")
    if null is not None:
        data = pd.concat([data, null.loc[null["method"].isin(methods), data.columns[:-1]].assign(labels="permuted")])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(methods) + 1.5))
    y = {m: i for i, m in enumerate(methods[::-1])}
    for (kind, part), shift, colour in zip(data.groupby("labels", sort=False), (0.12, -0.12), ("C0", "0.6")):
        at = part["method"].map(y) + (shift if null is not None else 0)
        ax.errorbar(part["auc"], at, xerr=[part["auc"] - part["auc_low"], part["auc_high"] - part["auc"]],
                    fmt="o", color=colour, capsize=3, label=f"labels {kind}")
    if oracle.any():
        ax.axvline(table.loc[oracle, "auc"].iloc[0], color="C3", linestyle="--", label="oracle (true activity)")
    ax.axvline(0.5, color="k", linestyle=":", linewidth=1)
    ax.set(yticks=list(y.values()), yticklabels=list(y), xlabel="ROC-AUC per unit (95 % bootstrap CI)",
           xlim=(0, 1))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig, data.reset_index(drop=True)


def ablation_deltas(table: pd.DataFrame):
    """Table 4 as a forest plot: each configuration's AUC minus the full model's, with its paired 95 % CI."""
    data = table.loc[table["configuration"] != "full",
                     ["configuration", "auc", "delta_auc", "delta_auc_low", "delta_auc_high"]].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(data) + 1.5))
    y = np.arange(len(data))[::-1]
    ax.errorbar(data["delta_auc"], y, xerr=[data["delta_auc"] - data["delta_auc_low"],
                                            data["delta_auc_high"] - data["delta_auc"]], fmt="o", capsize=3)
    ax.axvline(0, color="k", linestyle=":", linewidth=1)
    full = table.loc[table["configuration"] == "full", "auc"].iloc[0]
    ax.set(yticks=y, yticklabels=data["configuration"], xlabel=f"Δ AUC vs full GMVAE4P (AUC {full:.3f}), paired 95 % CI")
    fig.tight_layout()
    return fig, data


def roc_curves(predictions: pd.DataFrame, table: pd.DataFrame):
    """ROC curve of each method's out-of-fold per-unit predictions (``predictions.csv``), its AUC and 95 % CI from
    Table 1 in the legend. The panel data holds every curve's points."""
    from sklearn.metrics import roc_curve

    auc = table.set_index("method")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    points = []
    for method, part in predictions.groupby("method", sort=False):
        fpr, tpr, _ = roc_curve(part["label"], part["probability"])
        row = auc.loc[method]
        ax.plot(fpr, tpr, drawstyle="steps-post", linewidth=2 if method == "gmvae4p" else 1,
                label=f"{method}  {row['auc']:.2f} [{row['auc_low']:.2f}, {row['auc_high']:.2f}]")
        points.append(pd.DataFrame({"method": method, "fpr": fpr, "tpr": tpr}))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC per unit, out of fold", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(fontsize=7, frameon=False, loc="lower right", title="AUC [95 % CI]", title_fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig, pd.concat(points, ignore_index=True)


def auc_by_modality_count(table: pd.DataFrame):
    """Figure 3b: AUC (with CI) against the number of auxiliary modalities GMVAE4P reads, from Table 4's rows that
    change nothing but the modalities (the full model and its modality ablations), each point labelled."""
    data = table.loc[table["changes"].isin(["nothing", "modalities"]),
                     ["configuration", "modalities", "n_modalities", "auc", "auc_low", "auc_high"]]
    data = data.sort_values("n_modalities").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(data["n_modalities"], data["auc"], yerr=[data["auc"] - data["auc_low"], data["auc_high"] - data["auc"]],
                fmt="o-", capsize=3, color="0.25")
    for row in data.itertuples():
        ax.annotate(row.modalities or "bulk only", (row.n_modalities, row.auc), textcoords="offset points",
                    xytext=(6, -10), fontsize=7)
    ax.axhline(0.5, color="k", linestyle=":", linewidth=1)
    ax.set(xlabel="auxiliary modalities read", ylabel="AUC per unit (95 % CI)", xticks=sorted(data["n_modalities"]),
           title="GMVAE4P by modalities (Table 4)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig, data


def modality_weighting(fusion: pd.DataFrame, fused: pd.DataFrame, predictions: pd.DataFrame, *,
                       label_names: dict[int, str] | None = None):
    """Figure 1, from GMVAE4P's out-of-fold outputs on test units (stage 04's ``gmvae4p_fusion.csv``,
    ``gmvae4p_fused.csv`` and its rows of ``predictions.csv``): (a) mean fusion weight per class and modality,
    (b) each class's share of units by dominant modality, (c) the units' fused representations on the first two
    principal components of their fold's model, coloured by label, (d) fusion-weight entropy of correct and wrong
    calls (threshold 0.5).
    The panel data has one row per unit."""
    modalities = [c for c in fusion.columns if c not in ("fold", "unit", "label")]
    names = label_names or {0: "negative", 1: "positive"}
    data = fusion.merge(predictions[["unit", "probability"]], on="unit", how="left")
    weights = data[modalities].to_numpy()
    data["dominant"] = np.asarray(modalities)[weights.argmax(1)]
    data["entropy"] = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(1)
    data["correct"] = (data["probability"] >= 0.5).astype(int) == data["label"]
    # each fold has its own model, so its own representation space: PCA per fold, PC 1 turned to rise with the
    # predicted probability (not the labels) so that folds read the same way
    representation = fused.set_index("unit").loc[data["unit"]].filter(like="fused_").to_numpy()
    data[["pc1", "pc2"]] = 0.0
    for rows in data.groupby("fold").indices.values():
        centred = representation[rows] - representation[rows].mean(0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        projected = centred @ components[:2].T
        if np.corrcoef(projected[:, 0], data["probability"].to_numpy()[rows])[0, 1] < 0:
            projected[:, 0] *= -1
        data.loc[data.index[rows], ["pc1", "pc2"]] = projected / projected.std(0).clip(1e-12)
    data["class"] = data["label"].map(names)

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
    mean_weights = data.groupby("class")[modalities].mean()
    image = axes[0].imshow(mean_weights.to_numpy(), cmap="viridis", vmin=0, vmax=max(0.5, mean_weights.max().max()))
    axes[0].set(xticks=range(len(modalities)), xticklabels=modalities, yticks=range(len(mean_weights)),
                yticklabels=mean_weights.index, title="a  mean fusion weight")
    for (i, j), value in np.ndenumerate(mean_weights.to_numpy()):
        axes[0].text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=9)
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    shares = pd.crosstab(data["class"], data["dominant"], normalize="index").reindex(columns=modalities, fill_value=0)
    shares.plot.bar(stacked=True, ax=axes[1], rot=0, width=0.7)
    axes[1].set(ylabel="share of units", xlabel="", title="b  dominant modality", ylim=(0, 1))
    axes[1].legend(fontsize=8, frameon=False)
    for (label, part), colour in zip(data.groupby("class"), ("C0", "C3")):
        axes[2].scatter(part["pc1"], part["pc2"], s=18, color=colour, label=label, alpha=0.8)
    axes[2].set(xlabel="PC 1 (per fold, rising with the prediction)", ylabel="PC 2 (per fold)",
                title="c  fused representation of test units")
    axes[2].legend(fontsize=8, frameon=False)
    groups = [data.loc[data["correct"] == flag, "entropy"].to_numpy() for flag in (True, False)]
    axes[3].boxplot(groups, showfliers=False)
    for k, values in enumerate(groups, start=1):
        axes[3].scatter(np.full(len(values), k) + np.random.default_rng(k).uniform(-0.12, 0.12, len(values)),
                        values, s=10, color="0.3")
    axes[3].set(xticks=[1, 2], xticklabels=[f"correct (n={len(groups[0])})", f"wrong (n={len(groups[1])})"],
                ylabel="entropy (nats)", title="d  fusion-weight entropy")
    axes[3].axhline(np.log(len(modalities)), color="0.6", linestyle=":", linewidth=1)
    for ax in axes[1:]:
        ax.spines[["top", "right"]].set_visible(False)
    return fig, data


def _sample_labels(samples: ad.AnnData, rows: np.ndarray) -> np.ndarray:
    """The label of the selected samples, or "all" for a cohort without labels."""
    if "label" not in samples.obs:
        return np.full(int(np.sum(rows)), "all")
    return samples.obs.loc[rows, "label"].astype(str).to_numpy()


def save_figure(fig, data: pd.DataFrame, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write ``name.pdf``, ``name.png`` and the plotted data ``name.csv`` into ``folder``, each atomically."""
    folder = Path(folder)
    written = []
    for suffix in (".pdf", ".png"):
        with atomic_path(folder / f"{name}{suffix}") as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150)
        written.append(folder / f"{name}{suffix}")
    written.append(write_csv(data, folder / f"{name}.csv", index=True))
    return written


def _subsample(n: int, seed: int) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))
