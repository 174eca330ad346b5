"""``outputs/<run>/index.md``: what a run left behind, with its headline numbers read from its own tables."""

from __future__ import annotations

import pandas as pd

from .data import atomic_path
from .layout import RunLayout

INDEX = "index.md"


def write_index(layout: RunLayout, record: dict) -> None:
    """Write ``index.md`` into the run folder: the stages of ``record`` (``run.json``), the headline numbers of the
    tables present, and links to every notebook, table, figure and data file. Tables a run did not reach are left
    out, so the index of a partial run is still true."""
    lines = [f"# Run `{record['run_name']}`", "",
             f"Status **{record['status']}**; started {record['started']}"
             + (f", finished {record['finished']}" if record.get("finished") else "")
             + f"; parameters `{record['parameters_file']}`.", "",
             "| stage | status | wall time (s) | peak host memory (GB): RSS, PSS | peak GPU memory (GB) |",
             "|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['status']} | {s.get('wall_s', '')} | {s.get('peak_rss_gb', '')}, "
              f"{_or_dash(s.get('peak_pss_gb'))} | {_or_dash(s.get('peak_gpu_gb'))} |" for s in record["stages"]]
    headlines = _headlines(layout)
    if headlines:
        lines += ["", "## Headline numbers", "", *headlines[:-1]]
    lines += ["", "## Files", ""]
    for title, folder, pattern in (("Notebooks (executed)", layout.notebooks, "*.ipynb"),
                                   ("Tables", layout.tables, "*.csv"), ("Figures", layout.figures, "*.png"),
                                   ("Data", layout.data, "*.h5ad")):
        found = sorted(folder.glob(pattern))
        if found:
            lines.append(f"**{title}**: " + ", ".join(f"[{p.name}]({p.relative_to(layout.root)})" for p in found))
            lines.append("")
    with atomic_path(layout.root / INDEX) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n")


def _headlines(layout: RunLayout) -> list[str]:
    lines = []
    table1 = _read(layout, "table1_main")
    if table1 is not None:
        lines += ["Table 1, per-unit ROC-AUC [95 % CI over patients], out of fold (permutation p-value):", "",
                  *(f"- {r.method}: {_auc(r)}{_p(r)}" for r in table1.itertuples()), ""]
    table3 = _read(layout, "table3_bulk_deployment")
    if table3 is not None:
        lines += [f"Table 3, bulk deployment: AUC {table3['auc'].iloc[0]:.3f} from bulk only vs "
                  f"{table3['auc'].iloc[1]:.3f} with the scRNA modalities; retention {table3['retention'].iloc[0]:.2f}.",
                  ""]
    table4 = _read(layout, "table4_ablation")
    if table4 is not None:
        lines += ["Table 4, Δ AUC vs the full GMVAE4P [paired 95 % CI]:", "",
                  *(f"- {r.configuration}: {r.delta_auc:+.3f} [{r.delta_auc_low:+.3f}, {r.delta_auc_high:+.3f}]"
                    for r in table4.iloc[1:].itertuples()), ""]
    return lines


def _or_dash(value) -> str:
    return "–" if value is None else str(value)


def _auc(row) -> str:
    interval = f" [{row.auc_low:.3f}, {row.auc_high:.3f}]" if pd.notna(row.auc_low) else ""
    return f"{row.auc:.3f}{interval}"


def _p(row) -> str:
    p = getattr(row, "p_value", None)
    return f" (p = {p:.2g}, {int(row.n_permutations)} permutations)" if p is not None and pd.notna(p) else ""


def _read(layout: RunLayout, name: str) -> pd.DataFrame | None:
    path = layout.table(name)
    return pd.read_csv(path) if path.is_file() else None
