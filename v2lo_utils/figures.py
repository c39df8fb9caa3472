"""Plotly figures: clip frames, cognitive maps with the question's vectors, dataset statistics.

Map figures are in the map frame (m): x to the first camera's right, y forward, equal scale.
Every object is exactly one rectangle shape; cameras and vectors are traces and annotations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

from . import geometry as geo
from .cogmap import CogMap
from .prompting import load_image
from .questions import QVS_FRAME_SHARES, QVS_TASK_SHARES, TASKS

GT_COLOR = "#2a6fdb"
PRED_COLOR = "#e4572e"
HIDDEN_COLOR = "#9aa5b1"


def frames_figure(
    root: str | Path, frames: Sequence[str], cols: int = 8, height: int = 180
) -> go.Figure:
    """The sampled frames of a clip side by side (``frames`` relative to ``root``)."""
    images = np.stack([np.asarray(load_image(Path(root) / f)) for f in frames])
    cols = min(cols, len(frames))
    fig = px.imshow(images, facet_col=0, facet_col_wrap=cols, binary_string=True)
    for i, ann in enumerate(fig.layout.annotations):
        ann.text = Path(frames[i]).stem.replace("frame_", "frame ")
    rows = -(-len(frames) // cols)
    fig.update_layout(height=height * rows + 40, margin=dict(l=0, r=0, t=30, b=0))
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig


def question_vectors(task: str, params: dict, cogmap: CogMap) -> list[tuple[geo.Vec, geo.Vec, str]]:
    """The arrows that explain a question: (start, end, label) in the map frame (m)."""
    return TASKS[task].vectors(params, cogmap)


def cogmap_figure(
    gt: CogMap,
    pred: CogMap | None = None,
    extent: geo.Box | None = None,
    cameras: Sequence[tuple[geo.Vec, geo.Vec]] = (),
    vectors: Sequence[tuple[geo.Vec, geo.Vec, str]] = (),
    hidden: set[int] = frozenset(),
    title: str = "",
    height: int = 520,
) -> go.Figure:
    """A bird's-eye map: ground-truth boxes (``hidden`` indices dotted: not seen in the sampled
    frames), optional predicted boxes, the room, the cameras and the question's vectors."""
    fig = go.Figure()
    if extent is not None:
        x0, y0, x1, y1 = extent
        fig.add_trace(
            go.Scatter(
                x=[x0, x1, x1, x0, x0],
                y=[y0, y0, y1, y1, y0],
                mode="lines",
                line=dict(color="#555", width=1, dash="dash"),
                name="room",
                hoverinfo="skip",
            )
        )
    for i, o in enumerate(gt.objects):
        seen = i not in hidden
        fig.add_shape(
            type="rect",
            x0=o.bbox[0],
            y0=o.bbox[1],
            x1=o.bbox[2],
            y1=o.bbox[3],
            line=dict(
                color=GT_COLOR if seen else HIDDEN_COLOR, width=2, dash="solid" if seen else "dot"
            ),
            fillcolor=GT_COLOR if seen else HIDDEN_COLOR,
            opacity=0.35,
            name=o.name,
        )
    if len(gt):
        cx, cy = zip(*(o.center for o in gt.objects), strict=True)
        fig.add_trace(
            go.Scatter(
                x=cx,
                y=cy,
                mode="text",
                text=gt.names(),
                name="objects",
                textfont=dict(size=11),
                hovertext=[_box_text(o.bbox) for o in gt.objects],
            )
        )
    if pred is not None and len(pred):
        xs, ys = [], []
        for o in pred.objects:
            x0, y0, x1, y1 = o.bbox
            xs += [x0, x1, x1, x0, x0, None]
            ys += [y0, y0, y1, y1, y0, None]
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line=dict(color=PRED_COLOR, width=2), name="predicted"
            )
        )
    if cameras:
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p, _ in cameras],
                y=[p[1] for p, _ in cameras],
                mode="markers",
                marker=dict(symbol="triangle-up", size=9, color="black"),
                name="cameras",
            )
        )
        for p, f in cameras:
            _arrow(fig, p, (p[0] + 0.5 * f[0], p[1] + 0.5 * f[1]), arrowhead=2, arrowcolor="black")
    for start, end, label in vectors:
        _arrow(fig, start, end, arrowhead=3, arrowwidth=2, arrowcolor="#2b9348")
        if label:
            fig.add_annotation(
                x=(start[0] + end[0]) / 2,
                y=(start[1] + end[1]) / 2,
                text=label,
                showarrow=False,
                font=dict(color="#2b9348"),
            )
    fig.update_yaxes(scaleanchor="x", scaleratio=1, title="y (m, forward)")
    fig.update_xaxes(title="x (m, right)")
    fig.update_layout(
        title=title, height=height, margin=dict(l=40, r=10, t=40, b=40), showlegend=True
    )
    return fig


def _arrow(fig: go.Figure, start: geo.Vec, end: geo.Vec, **style) -> None:
    """An arrow from ``start`` to ``end`` in data coordinates (m)."""
    fig.add_annotation(
        x=end[0],
        y=end[1],
        ax=start[0],
        ay=start[1],
        xref="x",
        yref="y",
        axref="x",
        ayref="y",
        showarrow=True,
        text="",
        **style,
    )


def _box_text(b: geo.Box) -> str:
    return f"[{b[0]:.2f}, {b[1]:.2f}, {b[2]:.2f}, {b[3]:.2f}]"


def share_figure(rows: Sequence[dict], key: str, title: str) -> go.Figure:
    """Measured shares of ``key`` ('task' or 'num_frames') beside QVS-Bench's."""
    expected = QVS_TASK_SHARES if key == "task" else QVS_FRAME_SHARES
    counts = Counter(r[key] for r in rows)
    cats = list(expected) + [k for k in counts if k not in expected]
    n = max(1, len(rows))
    fig = go.Figure(
        [
            go.Bar(
                x=[str(c) for c in cats], y=[counts.get(c, 0) / n for c in cats], name="dataset"
            ),
            go.Bar(
                x=[str(c) for c in cats], y=[expected.get(c, 0) for c in cats], name="QVS-Bench"
            ),
        ]
    )
    fig.update_layout(title=title, barmode="group", yaxis_tickformat=".0%", height=320)
    return fig


def answers_figure(rows: Sequence[dict]) -> go.Figure:
    """Answer distributions: option letters for multiple choice, values for numerical tasks."""
    from plotly.subplots import make_subplots

    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig = make_subplots(rows=1, cols=max(1, len(tasks)), subplot_titles=tasks)
    for i, t in enumerate(tasks, start=1):
        vals = [r["answer"] for r in rows if r["task"] == t]
        if TASKS[t].kind == "numerical":
            fig.add_trace(
                go.Histogram(x=[float(v) for v in vals], nbinsx=15, showlegend=False), 1, i
            )
        else:
            c = Counter(vals)
            fig.add_trace(go.Bar(x=sorted(c), y=[c[k] for k in sorted(c)], showlegend=False), 1, i)
    fig.update_layout(title="Answer distributions", height=300, margin=dict(t=60))
    return fig


def visibility_figure(table: dict[int, list[float]]) -> go.Figure:
    """Box plot of the fraction of a scene's objects seen, per number of sampled frames."""
    fig = go.Figure([go.Box(y=v, name=str(k)) for k, v in sorted(table.items())])
    fig.update_layout(
        title="Objects seen against frames sampled",
        xaxis_title="frames",
        yaxis_title="fraction of the scene's objects",
        yaxis_tickformat=".0%",
        height=320,
        showlegend=False,
    )
    return fig


def loss_figure(log_history: Sequence[dict], title: str = "Training loss") -> go.Figure:
    """Training loss against step from a trainer's log history."""
    pts = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    fig = go.Figure(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=320)
    return fig


def compare_figure(stages: dict[str, dict], keys: Sequence[str], title: str) -> go.Figure:
    """Grouped bars of summary metrics (``keys``) for each stage (e.g. before / after SFT)."""
    fig = go.Figure(
        [
            go.Bar(name=stage, x=list(keys), y=[s.get(k) or 0.0 for k in keys])
            for stage, s in stages.items()
        ]
    )
    fig.update_layout(title=title, barmode="group", height=340)
    return fig


def reward_figure(log_history: Sequence[dict], title: str = "GRPO rewards") -> go.Figure:
    """Reward curves of a GRPO run: overall, each reward function, and accuracy per task."""
    from plotly.subplots import make_subplots

    series: dict[str, list[tuple[int, float]]] = {}
    for h in log_history:
        for k, v in h.items():
            keep = k == "reward" or k.startswith("accuracy/")
            keep = keep or (k.startswith("rewards/") and k.endswith("/mean"))
            if keep and "step" in h and isinstance(v, (int, float)):
                series.setdefault(k, []).append((h["step"], float(v)))
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("reward (overall and per function)", "accuracy per task")
    )
    for name, pts in sorted(series.items()):
        col = 2 if name.startswith("accuracy/") else 1
        label = name.removeprefix("rewards/").removesuffix("/mean")
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label
            ),
            1,
            col,
        )
    fig.update_layout(title=title, height=360)
    fig.update_xaxes(title="step")
    return fig


def completions_table(
    rows: Sequence[dict], completions: Sequence[str], records: Sequence[dict]
) -> go.Figure:
    """Completions beside their parsed maps' quality and their scores."""
    cols = {
        "id": [r["id"] for r in rows],
        "task": [r["task"] for r in rows],
        "answer": [r["answer"] for r in rows],
        "completion": [c[:300] for c in completions],
        "format": [rec["format_ok"] for rec in records],
        "map recall": [round(rec.get("map_recall", 0.0), 2) for rec in records],
        "score": [round(rec["score"], 2) for rec in records],
        "reward": [round(rec["reward"], 2) for rec in records],
    }
    fig = go.Figure(
        go.Table(
            header=dict(values=list(cols)),
            cells=dict(values=list(cols.values()), align="left"),
            columnwidth=[2, 2, 1, 8, 1, 1, 1, 1],
        )
    )
    fig.update_layout(title="Sample completions", height=120 + 60 * len(rows))
    return fig


def accuracy_by_frames_figure(summary: dict, title: str) -> go.Figure:
    """Score against the number of frames, one line per task and the overall mean in bold."""
    fig = go.Figure()
    for task, cells in summary["by_task_frames"].items():
        ks = [k for k in cells if k.isdigit()]
        fig.add_trace(
            go.Scatter(
                x=[int(k) for k in ks], y=[cells[k] for k in ks], mode="lines+markers", name=task
            )
        )
    ks = [k for k in summary["by_frames"] if k.isdigit()]
    fig.add_trace(
        go.Scatter(
            x=[int(k) for k in ks],
            y=[summary["by_frames"][k] for k in ks],
            mode="lines+markers",
            name="overall",
            line=dict(width=4, color="black"),
        )
    )
    fig.update_layout(
        title=title, xaxis_title="frames", yaxis_title="score", yaxis_range=[0, 1.02], height=380
    )
    return fig


def map_error_figure(summaries: dict[str, dict]) -> go.Figure:
    """Map quality against frames per model: object recall and center error (m)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("object recall", "center error of matched objects (m)")
    )
    for label, s in summaries.items():
        ks = [k for k in s.get("map_by_frames", {}) if k.isdigit()]
        if not ks:
            continue
        m = s["map_by_frames"]
        for col, key in ((1, "object_recall"), (2, "center_error_m")):
            fig.add_trace(
                go.Scatter(
                    x=[int(k) for k in ks],
                    y=[m[k][key] for k in ks],
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    mode="lines+markers",
                ),
                1,
                col,
            )
    fig.update_xaxes(title="frames")
    fig.update_layout(title="Map quality against frames", height=380)
    return fig


def diagnostics_figure(diag: dict) -> go.Figure:
    """Scores per task of answers solved from ground-truth, 0.1 m, grid and noisy maps."""
    kinds = [k for k in diag if k != "noise"]
    tasks = [t for t in diag["ground_truth"] if t != "overall"] + ["overall"]
    fig = go.Figure([go.Bar(name=k, x=tasks, y=[diag[k][t] for t in tasks]) for k in kinds])
    fig.update_layout(
        title="Answers solved from maps: metric vs grid",
        barmode="group",
        yaxis_range=[0, 1.05],
        yaxis_title="score",
        height=380,
    )
    return fig


def noise_figure(diag: dict) -> go.Figure:
    """Score per task against the noise (m) added to every box coordinate."""
    sigmas = sorted(diag["noise"], key=float)
    tasks = [t for t in diag["noise"][sigmas[0]]]
    fig = go.Figure(
        [
            go.Scatter(
                x=[float(s) for s in sigmas],
                y=[diag["noise"][s][t] for s in sigmas],
                mode="lines+markers",
                name=t,
                line=dict(width=4 if t == "overall" else 2),
            )
            for t in tasks
        ]
    )
    fig.update_layout(
        title="Answers from noisy maps",
        xaxis_title="noise sigma (m)",
        yaxis_title="score",
        xaxis_type="log",
        yaxis_range=[0, 1.05],
        height=380,
    )
    return fig


def stages_table(summaries: dict[str, dict]) -> go.Figure:
    """One row per model (or baseline): overall, macro, per task, extraction failures, map metrics,
    and the score of the answers solve computes from the model's own maps."""
    tasks = sorted({t for s in summaries.values() for t in s["by_task"]})
    header = [
        "model",
        "overall",
        "macro",
        *tasks,
        "format",
        "extraction fail.",
        "map recall",
        "center err. (m)",
        "solve on its maps",
    ]

    def pct(v):
        return f"{100 * v:.1f}" if v is not None else "-"

    def map_mean(s, key):
        vals = [m[key] for m in s.get("map_by_frames", {}).values() if m.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    cells = [
        [
            label,
            pct(s["overall"]),
            pct(s["overall_macro"]),
            *[pct(s["by_task"].get(t)) for t in tasks],
            pct(s.get("format_rate")),
            pct(s["extraction_failure_rate"]),
            pct(map_mean(s, "object_recall")),
            f"{map_mean(s, 'center_error_m'):.2f}"
            if map_mean(s, "center_error_m") is not None
            else "-",
            pct(s.get("map_answer")),
        ]
        for label, s in summaries.items()
    ]
    columns = [[row[i] for row in cells] for i in range(len(header))]
    fig = go.Figure(
        go.Table(header=dict(values=header, height=40), cells=dict(values=columns, height=28))
    )
    fig.update_layout(title="QVS-Bench-Sim scores (%)", height=260 + 52 * len(cells))
    return fig


def frames_table(summaries: dict[str, dict]) -> go.Figure:
    """One row per model: the score (%) at each number of frames."""
    keys = sorted(
        {k for s in summaries.values() for k in s["by_frames"]},
        key=lambda k: (not k.isdigit(), k.zfill(3)),
    )
    rows = [
        [label, *[f"{100 * s['by_frames'][k]:.1f}" if k in s["by_frames"] else "-" for k in keys]]
        for label, s in summaries.items()
    ]
    columns = [[r[i] for r in rows] for i in range(len(keys) + 1)]
    header = ["model", *[f"{k} frames" for k in keys]]
    fig = go.Figure(
        go.Table(header=dict(values=header, height=32), cells=dict(values=columns, height=28))
    )
    fig.update_layout(title="Score (%) by number of frames", height=200 + 32 * len(rows))
    return fig


def claims_figure(rows: Sequence[dict], title: str = "The paper's claims, measured") -> go.Figure:
    """Each claim's measured effect (points) with its 95% interval (claims.claims_table's rows);
    the line at 0 is no effect."""
    colors = {"reproduced": "#2a9d8f", "not reproduced": PRED_COLOR}
    fig = go.Figure()
    for r in rows:
        lo, hi = r["ci"]
        fig.add_trace(
            go.Scatter(
                x=[r["effect"]],
                y=[r["claim"]],
                mode="markers",
                marker=dict(size=10, color=colors.get(r["verdict"], HIDDEN_COLOR)),
                error_x=dict(type="data", array=[hi - r["effect"]], arrayminus=[r["effect"] - lo]),
                name=r["verdict"],
                hovertext=f"{r['verdict']}; paper: {r['paper']}",
                showlegend=False,
            )
        )
    fig.add_vline(x=0, line_dash="dot", line_color="#888")
    fig.update_layout(
        title=title,
        xaxis_title="effect (points), 95% interval",
        yaxis=dict(autorange="reversed"),
        height=120 + 40 * len(rows),
        margin=dict(l=10, r=10, t=50, b=40),
    )
    return fig


def variants_figure(rows: Sequence[dict], title: str = "Variants against frames") -> go.Figure:
    """Each variant's QVS-Bench-Sim score (points, mean over its seeds) per evaluation frame
    count (claims.variant_summary's rows)."""
    fig = go.Figure()
    for r in rows:
        frames = sorted(r["per_frames"], key=int)
        fig.add_trace(
            go.Scatter(
                x=[int(f) for f in frames],
                y=[r["per_frames"][f] for f in frames],
                mode="lines+markers",
                name=f"{r['variant']} ({len(r['seeds'])} seeds)",
            )
        )
    fig.update_layout(title=title, xaxis_title="input frames", yaxis_title="score (points)")
    return fig
