"""Figures (plotly) and interactive attention pages (circuitsvis), all working offline.

Every label that comes from data (token strings, node names, config values) is HTML-escaped before it reaches a
figure or page, so a token like `<script>` is shown, never run. Attention pages inline circuitsvis's bundle once
(its default HTML loads from a CDN and is blank offline); plotly figures are exported as self-contained HTML,
PNG / SVG (kaleido, when a Chromium is installed) and their numbers as CSV.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp.model_id import group_of
from interp.stats import mean_ci
from interp.store import atomic_write_bytes, atomic_write_csv, atomic_write_text

PALETTE = {"finetuned": "#1f77b4", "scratch": "#d62728", "base": "#7f7f7f", "ft-vs-scratch": "#2ca02c",
           "between": "#2ca02c", "within finetuned": "#1f77b4", "within scratch": "#d62728",
           "scratch to the base": "#ff9896"}


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _title(text: str) -> dict[str, Any]:
    return {"text": esc(text), "font": {"size": 13}}


def heatmap(values: np.ndarray, y_labels: Sequence[str], x_labels: Sequence[str], title: str,
            colorbar: str = "", zmid: float | None = 0.0) -> Any:
    go = _go()
    fig = go.Figure(go.Heatmap(z=np.asarray(values, dtype=float), x=[esc(x) for x in x_labels],
                               y=[esc(y) for y in y_labels], colorscale="RdBu", reversescale=True, zmid=zmid,
                               colorbar={"title": esc(colorbar)}))
    fig.update_layout(title=_title(title), yaxis={"autorange": "reversed", "type": "category"},
                      xaxis={"type": "category"}, height=max(300, 40 * len(y_labels) + 150),
                      margin={"l": 80, "r": 20, "t": 60, "b": 120})
    return fig


def lines_ci(x: Sequence[Any], series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str,
             x_title: str, y_title: str) -> Any:
    """One line per series with a shaded 95% interval: series = {name: (mean, low, high)}."""
    go = _go()
    fig = go.Figure()
    xs = [esc(v) for v in x]
    for i, (name, (m, lo, hi)) in enumerate(series.items()):
        color = PALETTE.get(name.split(" ")[0], None) or ["#9467bd", "#8c564b", "#e377c2", "#17becf"][i % 4]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(hi) + list(lo)[::-1], fill="toself", opacity=0.2,
                                 line={"width": 0, "color": color}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=list(m), mode="lines+markers", name=esc(name), line={"color": color}))
    fig.update_layout(title=_title(title), xaxis_title=esc(x_title), yaxis_title=esc(y_title), height=380)
    return fig


def curves(traces: list[dict[str, Any]], title: str, x_title: str, y_title: str) -> Any:
    """Plain lines: traces = [{name, x, y, group}] (group picks the colour)."""
    go = _go()
    fig = go.Figure()
    for t in traces:
        fig.add_trace(go.Scatter(x=list(t["x"]), y=list(t["y"]), mode="lines+markers", name=esc(t["name"]),
                                 line={"color": PALETTE.get(t.get("group", ""), None), "dash": t.get("dash", "solid")}))
    fig.update_layout(title=_title(title), xaxis_title=esc(x_title), yaxis_title=esc(y_title), height=380)
    return fig


def bars(categories: Sequence[str], groups: dict[str, tuple[np.ndarray, np.ndarray]], title: str, y_title: str
         ) -> Any:
    """Grouped bars with error bars: groups = {name: (mean, half_width)}."""
    go = _go()
    fig = go.Figure()
    for name, (m, err) in groups.items():
        fig.add_trace(go.Bar(x=[esc(c) for c in categories], y=list(m), name=esc(name),
                             error_y={"type": "data", "array": list(err)},
                             marker_color=PALETTE.get(name.split(" ")[0], None)))
    fig.update_layout(title=_title(title), yaxis_title=esc(y_title), barmode="group", height=400)
    return fig


GROUP_COLORS = PALETTE


def profiles(x: Sequence[Any], per_model: dict[str, Sequence[float]], title: str, x_title: str, y_title: str,
             hline: float | None = None, group: dict[str, str] | None = None, bands: bool = True) -> Any:
    """One thin line per model and, per group (`group[name]`, default the name before "-s"), the mean over its
    models with the project's 95% interval over seeds (`interp.stats.mean_ci`) as a band (`bands=False` for
    lines that are not independent, e.g. pairs of models sharing a model)."""
    go = _go()
    fig = go.Figure()
    xs = [esc(v) for v in x]
    groups: dict[str, list[Sequence[float]]] = {}
    for name, ys in per_model.items():
        g = (group or {}).get(name, group_of(name))
        groups.setdefault(g, []).append(ys)
        fig.add_trace(go.Scatter(x=xs, y=list(ys), mode="lines", name=esc(name), opacity=0.45,
                                 line={"width": 1, "color": GROUP_COLORS.get(g)}, legendgroup=esc(g)))
    for g, rows in groups.items():
        m, lo, hi = mean_ci(np.asarray(rows, dtype=float))
        color = GROUP_COLORS.get(g)
        if len(rows) > 1 and bands:
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(hi) + list(lo)[::-1], fill="toself", opacity=0.18,
                                     line={"width": 0, "color": color}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=list(m), mode="lines+markers", name=esc(f"{g} mean ({len(rows)})"),
                                 line={"width": 3, "color": color}, legendgroup=esc(g)))
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dot", line_color="#555")
    fig.update_layout(title=_title(title), xaxis_title=esc(x_title), yaxis_title=esc(y_title), height=400)
    return fig


def strips(measures: Sequence[str], points: dict[str, list[tuple[str, float, str]]], title: str, y_title: str,
           chance: dict[str, float | None] | None = None, line_name: str = "chance", log_y: bool = False) -> Any:
    """Points per measure, one per (label, value, series), side by side by series (e.g. "within finetuned",
    "within scratch", "between", or "finetuned" / "scratch"), with the measure's reference level (its chance, or
    e.g. a step budget: `line_name`) as a black dash."""
    go = _go()
    fig = go.Figure()
    series = list(dict.fromkeys(r for pts in points.values() for _, _, r in pts))
    for k, rel in enumerate(series):
        xs, ys, text = [], [], []
        for i, m in enumerate(measures):
            for label, v, r in points.get(m, []):
                if r == rel:
                    xs.append(i + (k - (len(series) - 1) / 2) * 0.22)
                    ys.append(v)
                    text.append(esc(label))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=esc(rel), text=text, hoverinfo="text+y",
                                 marker={"size": 9, "color": PALETTE.get(rel), "opacity": 0.8}))
    for i, m in enumerate(measures):
        c = (chance or {}).get(m)
        if c is not None:
            fig.add_trace(go.Scatter(x=[i - 0.4, i + 0.4], y=[c, c], mode="lines", name=line_name,
                                     showlegend=i == 0, line={"color": "black", "dash": "dash"}))
    fig.update_layout(title=_title(title), yaxis_title=esc(y_title), height=420, yaxis_type="log" if log_y else None,
                      xaxis={"tickmode": "array", "tickvals": list(range(len(measures))),
                             "ticktext": [esc(m) for m in measures]})
    return fig


def faithfulness_curves(grid: Sequence[float], per_model: dict[str, Sequence[float]],
                        random_by_group: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str) -> Any:
    """Faithfulness against circuit size (fraction of items, log axis): one line per model and, per group, the
    random circuits' mean (dashed) with the 2.5-97.5 percentile band of all random draws."""
    go = _go()
    fig = go.Figure()
    xs = list(grid)
    for g, (m, lo, hi) in random_by_group.items():
        color = GROUP_COLORS.get(g)
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(hi) + list(lo)[::-1], fill="toself", opacity=0.12,
                                 line={"width": 0, "color": color}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=list(m), mode="lines", name=esc(f"random circuits ({g})"),
                                 line={"dash": "dash", "color": color}))
    for name, ys in per_model.items():
        fig.add_trace(go.Scatter(x=xs, y=list(ys), mode="lines+markers", name=esc(name),
                                 line={"color": GROUP_COLORS.get(group_of(name))}))
    fig.update_layout(title=_title(title), xaxis={"type": "log", "title": "fraction of the graph kept"},
                      yaxis_title="faithfulness f(C)", height=420)
    return fig


def circuit_graph(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], title: str) -> Any:
    """Nodes placed by layer (x) and index within the layer (y); edge width by |score|, colour by sign."""
    go = _go()
    pos = {n["name"]: (n["x"], n["y"]) for n in nodes}
    fig = go.Figure()
    top = max((abs(e["score"]) for e in edges), default=1.0) or 1.0
    for e in edges:
        if e["from"] not in pos or e["to"] not in pos:
            continue
        (x0, y0), (x1, y1) = pos[e["from"]], pos[e["to"]]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text",
                                 text=esc(f"{e['from']} -> {e['to']}: {e['score']:.3g}"), showlegend=False,
                                 line={"width": 0.5 + 5 * abs(e["score"]) / top,
                                       "color": "#1f77b4" if e["score"] >= 0 else "#d62728"}))
    fig.add_trace(go.Scatter(x=[n["x"] for n in nodes], y=[n["y"] for n in nodes], mode="markers+text",
                             text=[esc(n["name"]) for n in nodes], textposition="top center",
                             marker={"size": 10, "color": [n.get("score", 0) for n in nodes], "colorscale": "RdBu",
                                     "reversescale": True, "showscale": True}, showlegend=False))
    fig.update_layout(title=_title(title), xaxis_title="layer", yaxis={"visible": False}, height=450)
    return fig


def figure_rows(fig: Any) -> list[dict[str, Any]]:
    """The numbers behind a figure as tidy rows: heatmaps (row, column, value); lines and bars (series, x, y)."""
    rows: list[dict[str, Any]] = []
    for tr in fig.data:
        if tr.type == "heatmap":
            z = np.asarray(tr.z, dtype=float)
            ys = list(tr.y) if tr.y is not None else list(range(z.shape[0]))
            xs = list(tr.x) if tr.x is not None else list(range(z.shape[1]))
            rows += [{"series": "", "row": html.unescape(str(ys[i])), "column": html.unescape(str(xs[j])),
                      "value": float(z[i, j])} for i in range(z.shape[0]) for j in range(z.shape[1])]
        elif tr.type in ("scatter", "bar") and tr.x is not None and tr.hoverinfo != "skip":
            texts = tr.text if isinstance(tr.text, (list, tuple)) else [tr.text] * len(tr.x)
            rows += [{"series": html.unescape(str(tr.name or "")), "row": html.unescape(str(t or "")),
                      "column": html.unescape(str(x)), "value": float(y) if y is not None else float("nan")}
                     for x, y, t in zip(tr.x, tr.y, texts)]
    return rows


def figure_div(fig: Any) -> str:
    """A figure as an HTML fragment without the plotly bundle (the page includes it once)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def plotly_bundle() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def chromium_available() -> bool:
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


PLOTLY_JS = "plotly.min.js"


def write_plotly_js(folder: Path) -> Path:
    """One plotly.min.js per folder, shared by every figure page in it (pages load it from disk: offline)."""
    path = Path(folder) / PLOTLY_JS
    if not path.exists():
        atomic_write_text(path, plotly_bundle())
    return path


def export_figure(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write `stem`.html (interactive, loading the folder's shared plotly.min.js), .png, .svg as asked. PNG/SVG need a Chromium: without one they are
    skipped and a clear error is raised after the others are written."""
    written, missing = [], []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            write_plotly_js(stem.parent)
            atomic_write_text(path, fig.to_html(full_html=True, include_plotlyjs="directory"))
        elif fmt == "csv":
            atomic_write_csv(path, figure_rows(fig))
        elif fmt in ("png", "svg"):
            if not chromium_available():
                missing.append(fmt)
                continue
            atomic_write_bytes(path, fig.to_image(format=fmt, scale=2 if fmt == "png" else 1))
        else:
            raise ValueError(f"unknown figure format {fmt!r} (choose html, png, svg, csv)")
        written.append(path)
    if missing:
        raise RuntimeError(f"cannot write {', '.join(missing)}: no Chromium found (install the Debian package "
                           "`chromium`); the other formats were written")
    return written


def export_images(figs: dict[str, Any], out: Path, fmt: str) -> list[Path]:
    """Every figure as `fmt` (png or svg) in one Chromium session (kaleido's batch export), each file moved into
    place atomically."""
    import os
    import tempfile

    import plotly.io as pio

    if not chromium_available():
        raise RuntimeError(f"cannot write {fmt}: no Chromium found (install the Debian package `chromium`)")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".img."))
    try:
        names = list(figs)
        paths = [tmp / f"{n}.{fmt}" for n in names]
        pio.write_images(list(figs.values()), [str(p) for p in paths], format=fmt, scale=2 if fmt == "png" else 1)
        final = []
        for p in paths:
            os.replace(p, out / p.name)
            final.append(out / p.name)
        return final
    finally:
        import shutil as _sh

        _sh.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- circuitsvis
def _safe_json(obj: Any) -> str:
    """JSON that cannot close a <script> element or open a tag, whatever strings it holds."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _circuitsvis_bundle() -> str:
    """circuitsvis's inline JS bundle (taken from a rendered `local_src`, which inlines it)."""
    from circuitsvis.attention import attention_heads

    src = attention_heads(attention=np.ones((1, 1, 1)), tokens=["x"]).local_src
    start = src.index("<script crossorigin type=\"module\">") + len("<script crossorigin type=\"module\">")
    end = src.index("CircuitsVis.render(")
    return src[start:end]


def attention_views_page(views: list[dict[str, Any]], head_names: Sequence[str], title: str,
                         notes: Sequence[str] = (), provenance: dict[str, Any] | None = None) -> str:
    """One self-contained page comparing attention patterns side by side (e.g. a clean and a corrupted trial).

    views: [{"title": str, "text": str, "tokens": [str], "attention": array [head, dest, src]}], every view for the
    heads `head_names` in that order. One column per view: first every head as a grid (select a head to zoom in),
    then one row per head with its pattern at full size in each view. The patterns are stored once (a JSON block
    read by the page's script), circuitsvis's bundle is inlined once, and every label is escaped, so the page
    renders from disk with no network. `provenance` is embedded as JSON (id "provenance")."""
    names = [str(h) for h in head_names]
    data = {"heads": names, "views": [{"tokens": [str(t) for t in v["tokens"]],
                                       "attention": np.round(np.asarray(v["attention"], dtype=float), 4).tolist()}
                                      for v in views]}
    for v, d in zip(views, data["views"]):
        if len(d["attention"]) != len(names):
            raise ValueError(f"view {v['title']!r} has {len(d['attention'])} patterns for {len(names)} heads")
    cols = f"repeat({max(1, len(views))}, minmax(0, 640px))"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:20px} h2{font-size:1.05em;margin-top:28px} "
             f".cv-row{{display:grid;grid-template-columns:{cols};gap:24px;align-items:start}} "
             ".cv-text{font-family:monospace;white-space:pre-wrap;background:#f6f6f6;padding:4px 6px}</style>",
             f"</head><body><h1>{esc(title)}</h1>"]
    parts += [f"<p class='note'>{esc(n)}</p>" for n in notes]
    parts.append("<h2>All shown heads (select a head to zoom in)</h2><div class='cv-row'>")
    for j, v in enumerate(views):
        parts.append(f"<div><h3>{esc(v['title'])}</h3><div class='cv-text'>{esc(v.get('text', ''))}</div>"
                     f"<div id='cv-grid-{j}' class='cv-panel'></div></div>")
    parts.append("</div>")
    for i, h in enumerate(names):
        parts.append(f"<h2>{esc(h)}</h2><div class='cv-row'>")
        parts += [f"<div><h3>{esc(v['title'])}</h3><div id='cv-head-{i}-{j}' class='cv-panel'></div></div>"
                  for j, v in enumerate(views)]
        parts.append("</div>")
    parts.append(f"<script type='application/json' id='cv-data'>{_safe_json(data)}</script>")
    if provenance is not None:
        parts.append(f"<script type='application/json' id='provenance'>{_safe_json(provenance)}</script>")
    parts.append(f"<script>{_circuitsvis_bundle()}</script>")
    parts.append("<script>(function () {\n"
                 "  var D = JSON.parse(document.getElementById('cv-data').textContent);\n"
                 "  D.views.forEach(function (v, j) {\n"
                 "    CircuitsVis.render('cv-grid-' + j, CircuitsVis.AttentionHeads,\n"
                 "                       {attention: v.attention, tokens: v.tokens, attentionHeadNames: D.heads});\n"
                 "    D.heads.forEach(function (h, i) {\n"
                 "      CircuitsVis.render('cv-head-' + i + '-' + j, CircuitsVis.AttentionPattern,\n"
                 "                         {attention: v.attention[i], tokens: v.tokens});\n"
                 "    });\n"
                 "  });\n"
                 "})();</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
