"""Figures draw what the tables hold: their panel data is checked against the tables, never against literals."""

import dataclasses

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from gmvae4p import keys, plots  # noqa: E402
from gmvae4p.classify import evaluate, model as model_module  # noqa: E402
from gmvae4p.classify.ablation import ABLATIONS, NETWORK_ONLY, reference  # noqa: E402
from gmvae4p.classify.cv import patient_folds, unit_table  # noqa: E402
from gmvae4p.classify.metrics import binary_metrics, expected_calibration_error  # noqa: E402
from gmvae4p.layout import RunLayout  # noqa: E402
from gmvae4p.report import write_index  # noqa: E402

from test_classify import FAST, _samples  # noqa: E402

MODALITIES = ("proportions", "states", "communication")


def _predictions(methods, n_units=30, seed=0):
    rng = np.random.default_rng(seed)
    label = np.arange(n_units) % 2
    units = [f"U{i}" for i in range(n_units)]
    return pd.concat([pd.DataFrame({"method": m, "fold": np.arange(n_units) % 3, "unit": units, "label": label,
                                    "probability": np.clip(0.3 * label + rng.uniform(0, 0.7, n_units), 0, 1)})
                      for m in methods], ignore_index=True)


def _ablation_predictions(configurations):
    """Stage 05's predictions: from bulk, and in the scRNA mode (another draw)."""
    return _predictions(configurations).assign(probability_scrna=_predictions(configurations, seed=5)["probability"])


def _table4(predictions):
    """Table 4's columns for the configurations in ``predictions``, metrics computed from them, in both modes."""
    rows = []
    for name, part in predictions.groupby("method", sort=False):
        change = ABLATIONS[name]
        modalities = change.get("modalities", MODALITIES)
        given = binary_metrics(part["label"], part["probability_scrna"], n_boot=20)
        rows.append({"configuration": name, "changes": "+".join(k for k in change if k != "reference") or "nothing",
                     "reference": reference(name), "modalities": " ".join(modalities), "n_modalities": len(modalities),
                     **binary_metrics(part["label"], part["probability"], n_boot=20),
                     **{f"auc_scrna{end}": given[f"auc{end}"] for end in ("", "_low", "_high")}})
    return pd.DataFrame(rows)


def _fusion(n_units=30, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(3), n_units)
    return pd.DataFrame({"unit": [f"U{i}" for i in range(n_units)], **dict(zip(MODALITIES, weights.T)),
                         "fold": np.arange(n_units) % 3, "label": np.arange(n_units) % 2})


def test_figure3_points_are_table4s_and_single_modality_panels_read_the_one_modality_rows():
    configurations = ["full", NETWORK_ONLY, "no communication", "proportions only", "states only",
                      "communication only", "no auxiliary modalities", "no contrastive term"]
    ablation_predictions = _ablation_predictions(configurations)
    table4 = _table4(ablation_predictions)
    predictions = _predictions(["gmvae4p", "xgboost"], seed=1)
    table1 = evaluate.main_table(predictions, n_boot=20)
    fig, data = plots.modalities_figure(predictions, table1, ablation_predictions, table4, _fusion(),
                                        label_names={0: "healthy", 1: "SLE"})
    points = data[data["panel"] == "c"].set_index("configuration")
    # the modality network alone: with all modalities, and each modality change made to it
    expected = table4[(table4["changes"] == "modalities") | (table4["configuration"] == NETWORK_ONLY)]
    expected = expected.set_index("configuration")
    assert sorted(points.index) == sorted(expected.index) and not {"full", "no contrastive term"} & set(points.index)
    # panels b, c, e: the scRNA mode (the network reads the cells' modalities)
    pd.testing.assert_series_equal(points["auc"], expected.loc[points.index, "auc_scrna"], check_names=False)
    assert set(data.loc[data["panel"] == "b", "method"]) == {"proportions only", "states only", "communication only"}
    assert set(data.loc[data["panel"] == "a", "method"]) == {"gmvae4p", "xgboost"}
    correlation = data[data["panel"] == "e"].set_index("row")[["proportions only", "states only", "communication only"]]
    wide = ablation_predictions.pivot(index="unit", columns="method", values="probability_scrna")
    assert correlation.loc["states only", "proportions only"] == pytest.approx(
        wide["states only"].corr(wide["proportions only"], method="spearman"))
    weights = data[data["panel"] == "d"]
    assert len(weights) == 3 * 30 and set(weights["class"]) == {"healthy", "SLE"}


def test_figure3_refuses_a_table4_without_one_modality_rows():
    ablation_predictions = _ablation_predictions(["full", "no contrastive term"])
    predictions = _predictions(["gmvae4p"])
    with pytest.raises(ValueError, match="no one-modality configuration"):
        plots.modalities_figure(predictions, evaluate.main_table(predictions, n_boot=10), ablation_predictions,
                                _table4(ablation_predictions), _fusion())


def test_calibration_diagram_uses_the_bins_of_the_ece():
    predictions = _predictions(["a", "b"], n_units=50)
    _, bins = plots.calibration(predictions)
    for method, part in bins.groupby("method"):
        ece = (part["units"] / part["units"].sum() * (part["fraction_positive"] - part["mean_probability"]).abs()).sum()
        mine = predictions[predictions["method"] == method]
        assert ece == pytest.approx(expected_calibration_error(mine["label"], mine["probability"]))
        assert part["units"].sum() == 50


def test_diagnostics_draw_table2s_means_and_table3s_units():
    predictions = _predictions(["gmvae4p", "logistic_regression"])
    table2 = pd.DataFrame({"method": ["gmvae4p", "gmvae4p", "logistic_regression", "logistic_regression"] * 2,
                           "n_train_units": [10, 10, 10, 10, 20, 20, 20, 20], "repeat": [0, 1] * 4,
                           "auc": [0.5, 0.6, 0.55, 0.65, 0.7, 0.8, 0.6, 0.62]})
    deployment = pd.DataFrame({"fold": 0, "unit": ["U0", "U1", "U2"], "label": [0, 1, 1],
                               "bulk": [0.2, 0.7, 0.4], "scrna": [0.1, 0.9, 0.6]})
    table3 = pd.DataFrame({"input": ["bulk", "scRNA"], "auc": [0.8, 0.9], "retention": [0.8 / 0.9, 1.0]})
    _, data = plots.diagnostics(predictions, evaluate.main_table(predictions, n_boot=10), table2, table3, deployment)
    means = data[data["panel"] == "small_cohort"].set_index(["method", "n_train_units"])["mean"]
    assert means.loc[("gmvae4p", 20)] == pytest.approx(0.75)
    assert means.loc[("logistic_regression", 10)] == pytest.approx(0.6)
    assert data[data["panel"] == "bulk_deployment"]["unit"].tolist() == ["U0", "U1", "U2"]
    fig, data = plots.diagnostics(predictions, evaluate.main_table(predictions, n_boot=10), table2.iloc[:0], table3,
                                  deployment)  # classify.small_cohort_sizes: [] (the benchmark's setting)
    assert "Table 2 was not run" in fig.axes[1].texts[0].get_text() and "small_cohort" not in set(data["panel"])


def _labelled_cells():
    """40 cells of two types and two labels, with their column roles (as stage 01 records them)."""
    cells = ad.AnnData(np.zeros((40, 2), dtype=np.float32),
                       obs=pd.DataFrame({"ct": np.repeat(["T", "B"], 20), "disease": np.tile(["SLE", "healthy"], 20)},
                                        index=[f"c{i}" for i in range(40)]))
    cells.uns[keys.UNS] = {"columns": {"cell_type": "ct", "label": "disease"}}
    return cells


def test_figure2_draws_the_stored_umaps_and_names_the_missing_step():
    rng = np.random.default_rng(0)
    cells = _labelled_cells()
    fusion = _fusion()
    fused = pd.DataFrame(rng.normal(size=(30, 8)), columns=[f"fused_{i}" for i in range(8)]).assign(unit=fusion["unit"])
    predictions = _predictions(["gmvae4p"])
    with pytest.raises(KeyError, match="latent_umaps"):
        plots.embeddings(cells, fusion, fused, predictions)
    stored = {"cells": np.arange(0, 40, 2), "seed": 0}
    stored |= {basis: rng.normal(size=(20, 2)) for basis in (keys.X_GMVAE, keys.X_GMVAE_ZSCORE)}
    cells.uns[keys.UNS_GMVAE_UMAP] = stored
    _, data = plots.embeddings(cells, fusion, fused, predictions)
    drawn = data[(data["kind"] == "cell") & (data["basis"] == keys.X_GMVAE_ZSCORE)]
    assert drawn["cell"].tolist() == [f"c{i}" for i in range(0, 40, 2)]
    np.testing.assert_allclose(drawn[["UMAP1", "UMAP2"]], stored[keys.X_GMVAE_ZSCORE])
    assert (data["kind"] == "unit").sum() == 30


def test_top_communication_draws_each_label_in_the_colour_of_the_other_figures():
    rng = np.random.default_rng(1)
    obs = pd.DataFrame({keys.KIND: "mixture", "label": ["SLE", "healthy"] * 4}, index=[f"s{i}" for i in range(8)])
    samples = ad.AnnData(X=np.zeros((8, 2), dtype=np.float32), obs=obs)
    samples.obsm[keys.COMMUNICATION] = rng.random((8, 5)).astype(np.float32)
    samples.uns[keys.UNS_PSEUDOBULK] = {"communication_features": [f"L{i}→R{i}|A→B" for i in range(5)]}
    for positive, negative in (("SLE", "healthy"), ("healthy", "SLE")):
        fig, _ = plots.top_communication(samples, positive_label=positive)
        bars = {container.get_label(): container.patches[0].get_facecolor() for container in fig.axes[0].containers}
        assert bars[positive] == matplotlib.colors.to_rgba(plots.LABEL_COLOURS[1])
        assert bars[negative] == matplotlib.colors.to_rgba(plots.LABEL_COLOURS[0])


def test_stage02_umap_gives_each_label_the_colour_of_the_later_figures():
    rng = np.random.default_rng(0)
    cells = _labelled_cells()
    cells.uns[keys.UNS_GMVAE_UMAP] = {"cells": np.arange(40), keys.X_GMVAE: rng.normal(size=(40, 2))}
    for positive, negative in (("SLE", "healthy"), ("healthy", "SLE")):
        fig, _ = plots.latent_umap(cells, color=["ct", "disease"], positive_label=positive)
        legend = fig.axes[1].get_legend()
        colour = {text.get_text(): tuple(handle.get_facecolor()[0])
                  for text, handle in zip(legend.get_texts(), legend.legend_handles)}
        assert colour[positive] == matplotlib.colors.to_rgba(plots.LABEL_COLOURS[1])
        assert colour[negative] == matplotlib.colors.to_rgba(plots.LABEL_COLOURS[0])
        assert [text.get_text() for text in legend.get_texts()] == [negative, positive]  # as in every figure


def test_index_lists_what_the_run_wrote_with_table1s_numbers(tmp_path):
    layout = RunLayout(tmp_path / "run")
    predictions = _predictions(["gmvae4p", "xgboost"])
    table1 = evaluate.main_table(predictions, n_boot=20)
    table1.to_csv(layout.table("table1_main"), index=False)
    (layout.figures / "figure1_modality_weighting.png").write_bytes(b"png")
    record = {"run_name": "demo", "status": "complete", "started": "t0", "finished": "t1",
              "parameters_file": "parameters/demo.yaml",
              "stages": [{"stage": "04_classify", "status": "complete", "wall_s": 12.5, "peak_rss_gb": 1.1,
                          "peak_pss_gb": 0.9}]}
    write_index(layout, record)
    text = (layout.root / "index.md").read_text()
    assert f"- xgboost: {table1.loc[1, 'auc']:.3f} [{table1.loc[1, 'auc_low']:.3f}" in text
    assert "| 04_classify | complete | 12.5 | 1.1, 0.9 | – |" in text
    assert "[figure1_modality_weighting.png](figures/figure1_modality_weighting.png)" in text
    assert "Table 4" not in text  # a table the run did not reach is left out


def test_figure1_panel_data_follows_the_fusion_weights():
    samples = _samples()
    units = unit_table(samples, "SLE")
    folds = patient_folds(units, n_folds=4, seed=0)
    network = dataclasses.replace(FAST, learners=["network"])  # the figure reads the network's fusion weights
    result = evaluate.cross_validate(samples, units, folds, methods=["gmvae4p"], config=network, n_top_genes=20,
                                     n_top_interactions=10, device="cpu", progress=False)
    fig, data = plots.modality_weighting(result.fusion, result.fused, result.predictions.query("method == 'gmvae4p'"),
                                         label_names={0: "healthy", 1: "SLE"})
    assert len(fig.axes) >= 4 and len(data) == len(units)
    weights = data[list(model_module.MODALITIES)].to_numpy()
    assert (data["dominant"] == np.asarray(model_module.MODALITIES)[weights.argmax(1)]).all()
    assert data["entropy"].between(0, np.log(3) + 1e-9).all()
    assert (data["correct"] == ((data["probability"] >= 0.5) == data["label"].astype(bool))).all()
    assert set(data["class"]) == {"healthy", "SLE"}


def test_roc_curves_end_at_the_corners_and_the_legend_carries_table1s_auc():
    predictions = pd.DataFrame({"method": ["a"] * 6 + ["b"] * 6, "unit": list("uvwxyz") * 2,
                                "label": [0, 0, 0, 1, 1, 1] * 2,
                                "probability": [0.1, 0.4, 0.35, 0.8, 0.3, 0.9, 0.5, 0.2, 0.7, 0.6, 0.1, 0.4]})
    table = evaluate.main_table(predictions, n_boot=20)
    fig, points = plots.roc_curves(predictions, table)
    for method, curve in points.groupby("method"):
        assert curve[["fpr", "tpr"]].iloc[0].tolist() == [0, 0] and curve[["fpr", "tpr"]].iloc[-1].tolist() == [1, 1]
        area = np.trapezoid(curve["tpr"], curve["fpr"])  # the step curve's area from its points equals the AUC
        assert area == pytest.approx(table.set_index("method").loc[method, "auc"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[0].startswith(f"a  {table.loc[0, 'auc']:.2f}")
