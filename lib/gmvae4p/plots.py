"""Figures. Each function returns ``(Figure, DataFrame)``: the figure and the data its panels plot, so a notebook
saves both (:func:`save_figure`) and no plotted value exists only inside a picture."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from . import keys
from .classify.metrics import calibration_bins, expected_calibration_error
from .data import atomic_path, obs_column, write_csv
from .embedding import subsample

MAX_POINTS = 20_000
"""Cells drawn at most in the QC figure; it says when it shows a subsample."""
LABEL_COLOURS = ("C0", "C3")
"""The negative and the positive label's colour, in every figure that colours by label."""


def qc_overview(adata: ad.AnnData, *, min_genes: int, max_pct_mito: float | None, seed: int = 0):
    """Genes per cell, mitochondrial share and counts per cell before filtering, with the QC thresholds.

    Needs :func:`gmvae4p.preprocess.qc_metrics` to have run.
    """
    missing = [k for k in (keys.N_GENES, keys.TOTAL_COUNTS, keys.PCT_MITO) if k not in adata.obs]
    if missing:
        raise KeyError(f"adata.obs lacks {missing}: run gmvae4p.preprocess.qc_metrics first.")
    cells = subsample(adata.n_obs, MAX_POINTS, seed)
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
    fig.suptitle(f"Quality control before filtering ({_shown(len(cells), adata.n_obs, 'cells')}; "
                 f"{int(data['removed_by_qc'].sum()):,} shown "
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


def latent_umap(adata: ad.AnnData, *, color: list[str], basis: str = keys.X_GMVAE, positive_label: str | None = None):
    """The UMAP of ``obsm[basis]`` stored by :func:`gmvae4p.embedding.latent_umaps`, one panel per ``obs`` column
    in ``color``. The label column takes the colours of every later figure once the positive label is known
    (``positive_label``, else a simulated cohort's)."""
    data = _cell_umap(adata, basis, color)
    fig, axes = plt.subplots(1, len(color), figsize=(5.2 * len(color), 4.4), layout="constrained", squeeze=False)
    titles = _role_titles(adata)
    label_column = obs_column(adata, "label")
    label_colours = _label_colours(data[label_column], known_positive(adata, positive_label)) \
        if label_column in color else {}
    for ax, column in zip(axes[0], color):
        _scatter_groups(ax, data, column, title=titles.get(column, column),
                        colours=label_colours if column == label_column else None)
    fig.suptitle(f"GMVAE latent space (UMAP of {basis}, {_shown(len(data), adata.n_obs, 'cells')})")
    return fig, data


def _cell_umap(adata: ad.AnnData, basis: str, columns: list[str]) -> pd.DataFrame:
    """The stored UMAP coordinates of ``obsm[basis]`` with the embedded cells' ``columns``."""
    stored = adata.uns.get(keys.UNS_GMVAE_UMAP, {})
    if basis not in stored:
        raise KeyError(f"adata.uns[{keys.UNS_GMVAE_UMAP!r}] lacks {basis!r}: run "
                       "gmvae4p.embedding.latent_umaps(adata) first (stage 02 does).")
    obs = adata.obs.iloc[np.asarray(stored["cells"])][columns]
    return pd.DataFrame(np.asarray(stored[basis]), index=obs.index, columns=["UMAP1", "UMAP2"]).join(obs)


def _scatter_groups(ax, data: pd.DataFrame, column: str, *, x: str = "UMAP1", y: str = "UMAP2", size: float = 2,
                    title: str | None = None, colours: dict | None = None):
    """Scatter ``data[x]`` against ``data[y]``, one colour per category of ``data[column]`` (``colours``: category →
    colour, else the tab palettes), legend outside. Points are drawn in a random order, so no category hides
    another by being drawn last."""
    groups = data[column].astype("category")
    palette = plt.get_cmap("tab10" if len(groups.cat.categories) <= 10 else "tab20")
    # categories ``colours`` does not name (labels named otherwise than the caller knew) take the palette's; the
    # legend lists the named ones first, in the caller's order (negative label, then positive, in every figure)
    named = [g for g in (colours or {}) if g in set(groups.cat.categories)]
    legend_order = named + [g for g in groups.cat.categories if g not in named]
    colours = {**{g: palette(i % palette.N) for i, g in enumerate(groups.cat.categories)}, **(colours or {})}
    order = np.random.default_rng(0).permutation(len(data))
    point_colours = [colours[g] for g in groups.iloc[order]]
    ax.scatter(data[x].to_numpy()[order], data[y].to_numpy()[order], s=size, alpha=0.7, c=point_colours,
               rasterized=True)
    for group in legend_order:
        ax.scatter([], [], s=size, color=colours[group], label=str(group))
    ax.set(title=title or column, xticks=[], yticks=[], xlabel=x, ylabel=y)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=7, markerscale=8 / size ** 0.5, loc="center left", bbox_to_anchor=(1, 0.5))


def _class_colours(names: dict[int, str]) -> dict[str, str]:
    """Class name → colour: the negative label (0) in ``LABEL_COLOURS[0]``, the positive (1) in the other."""
    return {names[k]: LABEL_COLOURS[k] for k in (0, 1) if k in names}


def _role_titles(adata: ad.AnnData) -> dict[str, str]:
    """``obs`` column → the role it plays, as a panel title (``ct_cov`` → ``cell type``)."""
    columns = adata.uns.get(keys.UNS, {}).get("columns", {})
    return {column: role.replace("_", " ") for role, column in columns.items()}


def _shown(n_shown: int, n_total: int, what: str) -> str:
    return f"{n_shown:,} of {n_total:,} {what}" if n_shown < n_total else f"{n_total:,} {what}"


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


def known_positive(cells: ad.AnnData, positive_label: str | None = None) -> str | None:
    """``positive_label``, else a simulated cohort's positive label, else ``None`` (not yet named)."""
    return positive_label or cells.uns.get(keys.UNS_SIMULATION, {}).get("positive_label")


def _label_colours(labels, positive: str | None) -> dict[str, str]:
    """The two labels' colours of every figure (:func:`_class_colours`), once the ``positive`` one is known."""
    others = [str(g) for g in pd.unique(pd.Series(labels).astype(str)) if str(g) != str(positive)]
    return _class_colours({0: others[0], 1: str(positive)}) if positive is not None and len(others) == 1 else {}


def top_communication(samples: ad.AnnData, *, positive_label: str | None = None, n_top: int = 20):
    """The ``n_top`` ligand–receptor interactions whose mean score over mixture samples differs most between the
    labels (with one label, the highest), each label's mean as a bar, in the labels' colours of every figure once
    ``positive_label`` is known."""
    names = samples.uns[keys.UNS_PSEUDOBULK]["communication_features"]
    mixture = (samples.obs[keys.KIND] == "mixture").to_numpy()
    values = samples.obsm[keys.COMMUNICATION][mixture]
    label = _sample_labels(samples, mixture)
    groups = list(dict.fromkeys(sorted(label)))
    with warnings.catch_warnings():  # an interaction of a type never drawn for a label: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        means = pd.DataFrame({g: np.nanmean(values[label == g], axis=0) for g in groups}, index=names)
    rank = (means[groups[-1]] - means[groups[0]]).abs() if len(groups) > 1 else means[groups[0]]
    data = means.loc[rank.fillna(-np.inf).sort_values(ascending=False).index[:n_top]]
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.28 * max(len(data), 1)), layout="constrained")
    positions = np.arange(len(data))
    width = 0.8 / max(len(data.columns), 1)
    colours = _label_colours(groups, positive_label)
    for i, group in enumerate(data.columns):
        ax.barh(positions + i * width, data[group], height=width, label=group, color=colours.get(str(group)))
    ax.set_yticks(positions + 0.4 - width / 2, data.index, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ligand mean × receptor mean, log-CPM (sender → receiver)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars
    ranked = "differing most between the labels" if len(groups) > 1 else "highest"
    fig.suptitle(f"The {len(data)} of {len(names):,} ligand–receptor interactions {ranked} (mixture samples)")
    return fig, data


def method_auc(table: pd.DataFrame):
    """Per method, the per-unit ROC-AUC with its 95 % CI over patients (Table 1) and, where Table 1 has the
    permutation null, the null's 95 % range as a grey bar with the permutation p-value at the right; the
    simulator's ceilings (Table 1's ``oracle`` rows) as dashed lines and chance as a dotted one."""
    oracle = table["method"].str.startswith("oracle")
    columns = ["method", "auc", "auc_low", "auc_high", *[c for c in ("null_low", "null_high", "null_mean", "p_value")
                                                         if c in table]]
    data = table.loc[~oracle, columns].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(data) + 2.2))
    y = np.arange(len(data))[::-1]
    if "null_low" in data and data["null_low"].notna().any():  # a run without the null has empty columns
        ax.barh(y, data["null_high"] - data["null_low"], left=data["null_low"], height=0.5, color="0.85",
                label="permutation null, 95 % range")
        for at, p in zip(y, data["p_value"]):
            if np.isfinite(p):
                ax.text(1.04, at, f"p = {p:.2g}", va="center", fontsize=8)
    ax.errorbar(data["auc"], y, xerr=[data["auc"] - data["auc_low"], data["auc_high"] - data["auc"]], fmt="o",
                color="C0", capsize=3, label="AUC, 95 % CI over patients", clip_on=False, zorder=3)
    for (name, value), colour in zip(table.loc[oracle, ["method", "auc"]].itertuples(index=False), ("C3", "C1")):
        ax.axvline(value, color=colour, linestyle="--", label=name)
    ax.axvline(0.5, color="k", linestyle=":", linewidth=1)
    ax.set(yticks=y, yticklabels=data["method"], xlabel="ROC-AUC per unit", xlim=(0, 1.02))
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2, fontsize=8, frameon=False)  # below the axes
    fig.tight_layout()
    return fig, data


def null_distributions(null: pd.DataFrame, table: pd.DataFrame):
    """Each method's permutation-null AUCs (points) beside its real AUC (a red bar): how far from chance it is."""
    methods = [m for m in table["method"] if m in set(null["method"])]
    real = table.set_index("method")["auc"]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(methods) + 1.8))
    rng = np.random.default_rng(0)
    for i, method in enumerate(methods[::-1]):
        values = null.loc[null["method"] == method, "auc"].to_numpy()
        ax.scatter(values, i + rng.uniform(-0.15, 0.15, len(values)), s=14, color="0.5",
                   label="permuted labels" if i == 0 else None)
        ax.plot([real[method]] * 2, [i - 0.3, i + 0.3], color="C3", linewidth=2.5,
                label="real labels" if i == 0 else None)
    ax.axvline(0.5, color="k", linestyle=":", linewidth=1)
    ax.set(yticks=range(len(methods)), yticklabels=methods[::-1], xlabel="ROC-AUC per unit", xlim=(0, 1.02),
           title="Permutation null: every method refitted on permuted labels")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.15), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    data = null[null["method"].isin(methods)].merge(real.rename("real_auc"), left_on="method", right_index=True)
    return fig, data.reset_index(drop=True)


def ablation_deltas(table: pd.DataFrame):
    """Table 4 as a forest plot: each configuration's AUC minus its reference's (the full model, or the modality
    network alone for a change inside it), with its paired 95 % CI; one colour per reference."""
    data = table.loc[table["configuration"] != table["reference"],
                     ["configuration", "reference", "auc", "delta_auc", "delta_auc_low",
                      "delta_auc_high"]].reset_index(drop=True)
    auc = table.set_index("configuration")["auc"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(data) + 1.8))
    y = np.arange(len(data))[::-1]
    for k, (name, part) in enumerate(data.groupby("reference", sort=False)):
        delta, low, high = (part[c].to_numpy() for c in ("delta_auc", "delta_auc_low", "delta_auc_high"))
        ax.errorbar(delta, y[part.index], xerr=[delta - low, high - delta], fmt="o", capsize=3, color=f"C{k}",
                    label=f"vs {name} (AUC {auc.loc[name]:.3f})")
    ax.axvline(0, color="k", linestyle=":", linewidth=1)
    ax.set(yticks=y, yticklabels=data["configuration"], xlabel="Δ AUC vs the reference, paired 95 % CI")
    ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0))
    fig.tight_layout()
    return fig, data


def roc_curves(predictions: pd.DataFrame, table: pd.DataFrame, *, title: str = "ROC per unit, out of fold",
               highlight: str = "gmvae4p", ax=None):
    """ROC curve of each method's out-of-fold per-unit predictions (``predictions.csv``: ``method``, ``label``,
    ``probability``), its AUC and 95 % CI from ``table`` (Table 1's columns, indexed by ``method``) in the legend.
    The panel data holds every curve's points."""
    fig, ax = _figure_or(ax, (5.5, 5))
    auc = table.set_index("method")
    points = []
    for method, part in predictions.groupby("method", sort=False):
        fpr, tpr, _ = roc_curve(part["label"], part["probability"])
        row = auc.loc[method]
        ax.plot(fpr, tpr, drawstyle="steps-post", linewidth=2 if method == highlight else 1, clip_on=False,
                label=f"{method}  {row['auc']:.2f} [{row['auc_low']:.2f}, {row['auc_high']:.2f}]")
        points.append(pd.DataFrame({"method": method, "fpr": fpr, "tpr": tpr}))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    # a little room beyond 0 and 1: a perfect ranking's curve runs along the axes and would be hidden by them
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(-0.03, 1), ylim=(0, 1.03))
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="AUC [95 % CI]",
              title_fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, pd.concat(points, ignore_index=True)


def auc_by_modality_count(table: pd.DataFrame, *, ax=None):
    """Figure 3c: AUC (with CI) against the number of auxiliary modalities GMVAE4P's modality network reads, from
    Table 4's rows of the network alone that change nothing but the modalities (and the network with all of them),
    each point labelled; the mean AUC per count joined by a line."""
    network = table.loc[table["changes"] == "modalities", "reference"].unique()
    data = table.loc[(table["changes"] == "modalities") | table["configuration"].isin(network),
                     ["configuration", "modalities", "n_modalities", "auc", "auc_low", "auc_high"]]
    data = data.sort_values(["n_modalities", "configuration"]).reset_index(drop=True)
    fig, ax = _figure_or(ax, (5, 4))
    ax.errorbar(data["n_modalities"], data["auc"], yerr=[data["auc"] - data["auc_low"], data["auc_high"] - data["auc"]],
                fmt="o", capsize=3, color="0.25")
    means = data.groupby("n_modalities")["auc"].mean()
    ax.plot(means.index, means.to_numpy(), color="0.6", linewidth=1, zorder=0)
    most = data["n_modalities"].max()
    # initials keep the labels of neighbouring counts apart; those of one count go in a column, one line apart
    named = sorted({m for value in data["modalities"] if isinstance(value, str) for m in value.split()})
    for row, k in zip(data.itertuples(), data.groupby("n_modalities").cumcount()):
        read = row.modalities.split() if isinstance(row.modalities, str) else []
        label = "+".join(m[0].upper() for m in read) if read else "bulk"
        ax.annotate(label, (row.n_modalities, row.auc), textcoords="offset points", xytext=(8, 10 - 11 * k),
                    fontsize=7, arrowprops={"arrowstyle": "-", "color": "0.7", "linewidth": 0.5})
    ax.set_xlim(-0.3, most + 0.6)
    ax.axhline(0.5, color="k", linestyle=":", linewidth=1)
    key = ", ".join(f"{m[0].upper()} {m}" for m in named)
    ax.set(xlabel=f"auxiliary modalities read ({key})" if key else "auxiliary modalities read",
           ylabel="AUC per unit (95 % CI)",
           xticks=sorted(set(data["n_modalities"])), title="modality network by modalities (Table 4)")
    ax.spines[["top", "right"]].set_visible(False)
    return fig, data


def fusion_weight_distribution(fusion: pd.DataFrame, *, label_names: dict[int, str] | None = None, ax=None):
    """Distribution over test units of GMVAE4P's learned fusion weight of each modality, one box per modality and
    class (``gmvae4p_fusion.csv``); the dotted line is equal weighting."""
    modalities = _modalities(fusion)
    names = label_names or {0: "negative", 1: "positive"}
    data = fusion.melt(id_vars=["fold", "unit", "label"], value_vars=modalities, var_name="modality",
                       value_name="weight").assign(**{"class": lambda d: d["label"].map(names)})
    fig, ax = _figure_or(ax, (5, 4))
    classes = list(dict.fromkeys(names[k] for k in sorted(names)))
    width = 0.8 / len(classes)
    for k, (label, colour) in enumerate(zip(classes, LABEL_COLOURS)):
        values = [data.loc[(data["modality"] == m) & (data["class"] == label), "weight"] for m in modalities]
        positions = np.arange(len(modalities)) + (k - (len(classes) - 1) / 2) * width
        parts = ax.boxplot(values, positions=positions, widths=width * 0.9, showfliers=False, patch_artist=True,
                           medianprops={"color": "black"})
        for box in parts["boxes"]:
            box.set(facecolor=colour, alpha=0.5)
        ax.plot([], [], color=colour, linewidth=6, alpha=0.5, label=label)
    ax.axhline(1 / len(modalities), color="0.6", linestyle=":", linewidth=1)
    ax.set(xticks=range(len(modalities)), ylabel="fusion weight per test unit", title="learned fusion weights")
    ax.set_xticklabels(modalities, rotation=20, ha="right")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the boxes, not on them
    ax.spines[["top", "right"]].set_visible(False)
    return fig, data


def prediction_correlation(predictions: pd.DataFrame, *, ax=None):
    """Spearman correlation over units between the out-of-fold predictions of each pair of methods."""
    by_unit = predictions.pivot(index="unit", columns="method", values="probability")
    by_unit = by_unit[list(dict.fromkeys(predictions["method"]))]
    data = by_unit.corr(method="spearman")
    fig, ax = _figure_or(ax, (4.5, 4))
    image = ax.imshow(data.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    for (i, j), value in np.ndenumerate(data.to_numpy()):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if abs(value) > 0.6 else "black")
    ax.set_xticks(range(len(data)), data.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(data)), data.index, fontsize=8)
    ax.set_title(f"Spearman ρ of predictions ({len(by_unit)} units)")
    fig.colorbar(image, ax=ax, shrink=0.7)
    return fig, data


def modalities_figure(predictions: pd.DataFrame, table1: pd.DataFrame, ablation_predictions: pd.DataFrame,
                      table4: pd.DataFrame, fusion: pd.DataFrame, *, label_names: dict[int, str] | None = None):
    """Figure 3: (a) ROC per method (Table 1), (b) ROC of GMVAE4P's modality network trained with each single
    auxiliary modality (Table 4's one-modality rows, the network alone), (c) the network's AUC against the number of
    modalities (Table 4), (d) the learned fusion weights, (e) correlation of the single-modality predictions. Panels
    b, c and e are in the scRNA mode (``probability_scrna``, ``auc_scrna``…): from bulk the network reads only the
    program's score, given the cells it reads the modalities. The panel data carries a ``panel`` column."""
    single = table4.loc[(table4["changes"] == "modalities") & (table4["n_modalities"] == 1), "configuration"].tolist()
    if not single:
        raise ValueError("Table 4 has no one-modality configuration: run stage 05 with its default ablations.")
    single_predictions = ablation_predictions[ablation_predictions["method"].isin(single)].assign(
        probability=lambda d: d["probability_scrna"])
    table4 = table4.assign(**{f"auc{end}": table4[f"auc_scrna{end}"] for end in ("", "_low", "_high")})
    single_table = table4.rename(columns={"configuration": "method"})
    fig, axes = plt.subplots(2, 3, figsize=(17, 10), layout="constrained")
    parts = {"a": roc_curves(predictions, table1, title="a  every method", ax=axes[0, 0])[1],
             "b": roc_curves(single_predictions, single_table,
                             title="b  modality network, one modality, given the cells", ax=axes[0, 1])[1],
             "c": auc_by_modality_count(table4, ax=axes[0, 2])[1],
             "d": fusion_weight_distribution(fusion, label_names=label_names, ax=axes[1, 0])[1],
             "e": prediction_correlation(single_predictions, ax=axes[1, 1])[1].rename_axis("row").reset_index()}
    axes[0, 2].set_title("c  modality network given the cells: AUC by number of modalities (Table 4)")
    axes[1, 0].set_title("d  learned fusion weights (full model)")
    axes[1, 1].set_title("e  " + axes[1, 1].get_title() + ", given the cells")
    handles, labels = axes[0, 0].get_legend_handles_labels()  # panel a's long legend takes the free sixth slot
    axes[0, 0].get_legend().remove()
    axes[1, 2].axis("off")
    axes[1, 2].legend(handles, labels, loc="upper left", frameon=False, fontsize=9,
                      title="a  AUC [95 % CI] (coinciding curves overlap)", title_fontsize=9)
    fig.suptitle("Modalities: out-of-fold predictions per unit")
    return fig, pd.concat(parts, names=["panel", "row_in_panel"]).reset_index(level=0)


def embeddings(cells: ad.AnnData, fusion: pd.DataFrame, fused: pd.DataFrame, predictions: pd.DataFrame, *,
               label_names: dict[int, str] | None = None):
    """Figure 2: UMAP of cells in the GMVAE latent space before (``X_gmvae``) and after the per-component z-score
    (``X_gmvae_zscore``), coloured by cell type and by label (the UMAPs stored by
    :func:`gmvae4p.embedding.latent_umaps`, one subsample), and GMVAE4P's fused representations of the test units
    (per-fold PCA, as in Figure 1c) coloured by label and by predicted probability."""
    columns = [obs_column(cells, "cell_type"), obs_column(cells, "label")]
    bases = {keys.X_GMVAE: "E[z|x]", keys.X_GMVAE_ZSCORE: "z-score per component"}
    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5), layout="constrained")
    parts = []
    names = label_names or {0: "negative", 1: "positive"}
    colours = {columns[1]: _class_colours(names)}
    titles = _role_titles(cells)
    for row, (basis, name) in zip(axes, bases.items()):
        data = _cell_umap(cells, basis, columns)
        for ax, column in zip(row, columns):
            _scatter_groups(ax, data, column, title=f"{name}: {titles.get(column, column)}",
                            colours=colours.get(column))
        parts.append(data.assign(basis=basis))
    units = _fused_projection(fusion, fused, predictions, label_names)
    _scatter_groups(axes[0, 2], units, "class", x="pc1", y="pc2", size=18, title="test units' fused representation",
                    colours=_class_colours(names))
    points = axes[1, 2].scatter(units["pc1"], units["pc2"], c=units["probability"], cmap="coolwarm", vmin=0, vmax=1,
                                s=18)
    axes[1, 2].set(title="… by GMVAE4P's probability", xticks=[], yticks=[], xlabel="pc1", ylabel="pc2")
    fig.colorbar(points, cax=axes[1, 2].inset_axes([1.03, 0.15, 0.03, 0.7]), label="P(positive)")  # beside its panel
    fig.suptitle(f"Embeddings: {_shown(len(parts[0]), cells.n_obs, 'cells')} (UMAP); {len(units)} units "
                 "(PCA of each fold's model, PC 1 rising with the prediction)")
    cell_data = pd.concat(parts).rename_axis("cell").reset_index().assign(kind="cell")
    return fig, pd.concat([cell_data, units.assign(kind="unit")], ignore_index=True)


def calibration(predictions: pd.DataFrame, *, methods: list[str] | None = None, n_bins: int = 10, ax=None):
    """Reliability diagram of ``methods`` (default: all): the fraction of positive units against the mean predicted
    probability in each of ``n_bins`` equal-width bins (the bins of Table 1's ECE), marker area ∝ units in the bin;
    empty bins are left out."""
    fig, ax = _figure_or(ax, (5, 5))
    rows = []
    chosen = predictions if methods is None else predictions[predictions["method"].isin(methods)]
    for method, part in chosen.groupby("method", sort=False):
        table = part.assign(bin=calibration_bins(part["probability"], n_bins)).groupby("bin").agg(
            mean_probability=("probability", "mean"), fraction_positive=("label", "mean"),
            units=("label", "size")).reset_index()
        rows.append(table.assign(method=method))
        ece = expected_calibration_error(part["label"], part["probability"], n_bins=n_bins)
        line, = ax.plot(table["mean_probability"], table["fraction_positive"],
                        linewidth=2 if method == "gmvae4p" else 1, label=f"{method} (ECE {ece:.2f})")
        ax.scatter(table["mean_probability"], table["fraction_positive"], s=12 * table["units"],
                   color=line.get_color(), alpha=0.6)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    ax.set(xlabel="mean predicted probability (bin)", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1),
           title="calibration per unit")
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, pd.concat(rows, ignore_index=True)


def small_cohort_curve(table2: pd.DataFrame, *, reference: pd.DataFrame | None = None, ax=None):
    """Table 2: mean AUC (± SD over repeats, each repeat a point) against the number of training units per method;
    with ``reference`` (Table 1), each method's AUC with all training units as a dashed line."""
    fig, ax = _figure_or(ax, (5, 4))
    data = table2.groupby(["method", "n_train_units"])["auc"].agg(["mean", "std", "count"]).reset_index()
    if data.empty:  # say so rather than draw empty axes
        ax.text(0.5, 0.5, "Table 2 was not run\n(classify.small_cohort_sizes is empty)", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set(xticks=[], yticks=[], title="small cohorts (Table 2)")
        ax.spines[:].set_visible(False)
        return fig, data
    for k, (method, part) in enumerate(data.groupby("method", sort=False)):
        colour = f"C{k}"
        ax.errorbar(part["n_train_units"], part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3,
                    color=colour, label=method)
        repeats = table2[table2["method"] == method]
        ax.scatter(repeats["n_train_units"], repeats["auc"], s=8, color=colour, alpha=0.4)
        if reference is not None and method in set(reference["method"]):
            ax.axhline(reference.set_index("method").loc[method, "auc"], color=colour, linestyle="--", linewidth=1)
    ax.axhline(0.5, color="k", linestyle=":", linewidth=1)
    ax.set(xlabel="training units", ylabel="AUC per unit (mean ± SD)", xticks=sorted(set(data["n_train_units"])),
           title="small cohorts (Table 2; dashed: all training units)")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, data


def bulk_deployment(table3: pd.DataFrame, deployment: pd.DataFrame, *, label_names: dict[int, str] | None = None,
                    ax=None):
    """Table 3: each held-out unit's probability from bulk only against the one with its scRNA modalities given,
    coloured by label, with both AUCs and the retention in the title."""
    fig, ax = _figure_or(ax, (4.8, 4.5))
    names = label_names or {0: "negative", 1: "positive"}
    for label, colour in enumerate(LABEL_COLOURS):
        part = deployment[deployment["label"] == label]
        ax.scatter(part["scrna"], part["bulk"], s=14, color=colour, label=names[label], alpha=0.8)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    auc = table3["auc"].to_numpy()
    ax.set(xlabel="P(positive), scRNA modalities given", ylabel="P(positive), bulk only", xlim=(0, 1), ylim=(0, 1),
           title=f"bulk deployment: AUC {auc[0]:.2f} vs {auc[1]:.2f} (retention {table3['retention'].iloc[0]:.2f})")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, deployment


def diagnostics(predictions: pd.DataFrame, table1: pd.DataFrame, table2: pd.DataFrame, table3: pd.DataFrame,
                deployment: pd.DataFrame, *, label_names: dict[int, str] | None = None):
    """Classifier diagnostics: calibration of GMVAE4P and of the baseline with the highest AUC in Table 1, the
    small-cohort curve and bulk deployment."""
    baselines = table1[~table1["method"].str.startswith(("gmvae4p", "oracle"))]
    shown = ["gmvae4p", baselines.sort_values("auc", ascending=False)["method"].iloc[0]]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    parts = {"calibration": calibration(predictions, methods=shown, ax=axes[0])[1],
             "small_cohort": small_cohort_curve(table2, reference=table1, ax=axes[1])[1],
             "bulk_deployment": bulk_deployment(table3, deployment, label_names=label_names, ax=axes[2])[1]}
    return fig, pd.concat(parts, names=["panel", "row_in_panel"]).reset_index(level=0)


def modality_weighting(fusion: pd.DataFrame, fused: pd.DataFrame, predictions: pd.DataFrame, *,
                       label_names: dict[int, str] | None = None):
    """Figure 1, from GMVAE4P's out-of-fold outputs on test units (stage 04's ``gmvae4p_fusion.csv``,
    ``gmvae4p_fused.csv`` and its rows of ``predictions.csv``): (a) mean fusion weight per class and modality,
    (b) each class's share of units by dominant modality, (c) the units' fused representations on the first two
    principal components of their fold's model, coloured by label, (d) fusion-weight entropy of correct and wrong
    calls (threshold 0.5).
    The panel data has one row per unit."""
    modalities = _modalities(fusion)
    data = _fused_projection(fusion, fused, predictions, label_names)
    weights = data[modalities].to_numpy()
    data["dominant"] = np.asarray(modalities)[weights.argmax(1)]
    data["entropy"] = -(weights * np.log(np.clip(weights, 1e-12, None))).sum(1)
    data["correct"] = (data["probability"] >= 0.5).astype(int) == data["label"]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
    mean_weights = data.groupby("class", observed=True)[modalities].mean()
    image = axes[0].imshow(mean_weights.to_numpy(), cmap="viridis", vmin=0, vmax=max(0.5, mean_weights.max().max()))
    axes[0].set(xticks=range(len(modalities)), xticklabels=modalities, yticks=range(len(mean_weights)),
                yticklabels=mean_weights.index, title="a  mean fusion weight")
    for (i, j), value in np.ndenumerate(mean_weights.to_numpy()):
        axes[0].text(j, i, f"{value:.2f}", ha="center", va="center", color="w", fontsize=9)
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    shares = pd.crosstab(data["class"], data["dominant"], normalize="index")
    shares = shares[[m for m in modalities if m in shares]]  # a modality that dominates no unit has no bar
    shares.plot.bar(stacked=True, ax=axes[1], rot=0, width=0.7)
    axes[1].set(ylabel="share of units", xlabel="", title="b  dominant modality", ylim=(0, 1))
    axes[1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars
    _scatter_groups(axes[2], data, "class", x="pc1", y="pc2", size=18, title="c  fused representation of test units",
                    colours=_class_colours(label_names or {0: "negative", 1: "positive"}))
    axes[2].set(xlabel="PC 1 (per fold, rising with the prediction)", ylabel="PC 2 (per fold)")
    groups = [data.loc[data["correct"] == flag, "entropy"].to_numpy() for flag in (True, False)]
    axes[3].boxplot(groups, showfliers=False, medianprops={"color": "black"})
    for k, values in enumerate(groups, start=1):
        axes[3].scatter(np.full(len(values), k) + np.random.default_rng(k).uniform(-0.12, 0.12, len(values)),
                        values, s=10, color="0.3")
    axes[3].set(xticks=[1, 2], xticklabels=[f"correct (n={len(groups[0])})", f"wrong (n={len(groups[1])})"],
                ylabel="entropy (nats)", title="d  fusion-weight entropy")
    axes[3].axhline(np.log(len(modalities)), color="0.6", linestyle=":", linewidth=1)
    for ax in axes[1:]:
        ax.spines[["top", "right"]].set_visible(False)
    return fig, data


def _modalities(fusion: pd.DataFrame) -> list[str]:
    return [c for c in fusion.columns if c not in ("fold", "unit", "label")]


def _fused_projection(fusion: pd.DataFrame, fused: pd.DataFrame, predictions: pd.DataFrame,
                      label_names: dict[int, str] | None) -> pd.DataFrame:
    """``fusion`` with the unit's GMVAE4P ``probability``, its ``class`` name and ``pc1``/``pc2``: its fused
    representation on the first two principal components of its fold's test units, each scaled to unit SD.
    Each fold has its own model, so its own representation space: PC 1 is turned to rise with the predicted
    probability (not the labels) so that folds read the same way."""
    names = label_names or {0: "negative", 1: "positive"}
    data = fusion.merge(predictions[["unit", "probability"]], on="unit", how="left")
    representation = fused.set_index("unit").loc[data["unit"]].filter(like="fused_").to_numpy()
    data[["pc1", "pc2"]] = 0.0
    for rows in data.groupby("fold").indices.values():
        centred = representation[rows] - representation[rows].mean(0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        projected = centred @ components[:2].T
        if np.corrcoef(projected[:, 0], data["probability"].to_numpy()[rows])[0, 1] < 0:
            projected[:, 0] *= -1
        data.loc[data.index[rows], ["pc1", "pc2"]] = projected / projected.std(0).clip(1e-12)
    data["class"] = pd.Categorical(data["label"].map(names), categories=[names[k] for k in sorted(names)])
    return data


def _figure_or(ax, figsize: tuple[float, float]):
    """``(ax.figure, ax)``, or a new figure and axes of ``figsize`` when ``ax`` is None."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _sample_labels(samples: ad.AnnData, rows: np.ndarray) -> np.ndarray:
    """The label of the selected samples, or "all" for a cohort without labels."""
    if "label" not in samples.obs:
        return np.full(int(np.sum(rows)), "all")
    return samples.obs.loc[rows, "label"].astype(str).to_numpy()


def benchmark_heatmap(table: pd.DataFrame):
    """The cohort benchmark: AUC of each method (rows, GMVAE4P first) on each cohort (columns), written in each cell;
    the last column is each method's mean over the cohorts (reference rows have none)."""
    methods = list(dict.fromkeys(table["method"]))
    cohorts = list(dict.fromkeys(table["cohort"]))
    data = table.pivot(index="method", columns="cohort", values="auc").reindex(index=methods, columns=cohorts)
    data["mean"] = data.mean(1).where(~data.index.str.startswith("oracle"))
    fig, ax = plt.subplots(figsize=(1.1 * data.shape[1] + 3.5, 0.42 * data.shape[0] + 1.8), layout="constrained")
    image = ax.imshow(data.to_numpy(dtype=float), cmap="RdYlBu", vmin=0.3, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(data.to_numpy(dtype=float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value < 0.45 or value > 0.9 else "black")
    ax.axvline(data.shape[1] - 1.5, color="white", lw=3)
    ax.set_xticks(range(data.shape[1]), data.columns, rotation=35, ha="right")
    ax.set_yticks(range(data.shape[0]), data.index)
    fig.colorbar(image, ax=ax, label="AUC (per patient unit, out of fold)", shrink=0.8)
    ax.set_title("Cohort benchmark: AUC by method and cohort")
    return fig, data


def new_patient_probabilities(predictions: pd.DataFrame, *, threshold: float, labels: tuple[str, str]):
    """``gmvae4p predict``'s output: each sample's calibrated probability of the positive label (sorted), coloured by
    the label called at the model's ``threshold`` (dashed), with the share of the model's genes found in the title."""
    data = predictions.sort_values("probability_calibrated").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.22 * min(len(data), 60)), layout="constrained")
    for label, colour in zip(labels, LABEL_COLOURS):
        part = data[data["predicted_label"] == label]
        ax.scatter(part["probability_calibrated"], part.index, color=colour, s=18,
                   label=f"called {label} ({len(part)})")
    ax.axvline(threshold, color="0.3", linestyle="--", linewidth=1, label=f"the model's threshold ({threshold:.2f})")
    ax.set_yticks(data.index, data["sample"].astype(str) if len(data) <= 60 else [""] * len(data), fontsize=7)
    found = data["genes_found"].min()
    ax.set(xlim=(-0.02, 1.02), xlabel=f"P({labels[1]}), calibrated", title=f"{len(data)} samples; {found:.0%} of the model's genes found")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, data[["sample", "probability_calibrated", "predicted_label", "genes_found"]]


def save_figure(fig, data: pd.DataFrame, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write ``name.pdf``, ``name.png`` and the plotted data ``name.csv`` into ``folder``, each atomically."""
    folder = Path(folder)
    written = []
    for suffix in (".pdf", ".png"):
        with atomic_path(folder / f"{name}{suffix}") as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")  # legends and notes beside the axes too
        written.append(folder / f"{name}{suffix}")
    written.append(write_csv(data, folder / f"{name}.csv", index=True))
    return written


