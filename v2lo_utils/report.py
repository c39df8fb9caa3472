"""A self-contained HTML report: headings, short texts, tables and plotly figures.

plotly.js is embedded once, so the file opens offline.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path

from .runs import METRICS_FILES, RunFolder

# per training stage: the labels of its held-out panel (before, after) and the panel's title
STAGE_PANELS = {
    "sft": ("before SFT", "after SFT", "SFT on held-out clips"),
    "grpo": ("SFT", "SFT + GRPO", "GRPO on held-out prompts"),
    "grpo_map": (
        "SFT",
        "SFT + GRPO, map reward",
        "GRPO with the map-aware reward on held-out prompts",
    ),
}


def write_report(
    path: str | Path, title: str, sections: list[tuple[str, list]], meta: dict | None = None
) -> Path:
    """``sections``: (heading, items); an item is a plotly figure, a string of text, or a dict
    shown as JSON. Returns the path written."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "pre{background:#f5f5f5;padding:.6em;overflow-x:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
    ]
    if meta:
        parts.append(f"<pre>{html.escape(json.dumps(meta, indent=2))}</pre>")
    first = True
    for heading, items in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for item in items:
            if hasattr(item, "to_html"):
                parts.append(item.to_html(full_html=False, include_plotlyjs=first))
                first = False
            elif isinstance(item, str):
                parts.append(f"<p>{html.escape(item)}</p>")
            else:
                parts.append(f"<pre>{html.escape(json.dumps(item, indent=2))}</pre>")
    parts.append("</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def stage_metrics(run_dir: str | Path) -> dict[str, dict]:
    """The metrics the run's stages wrote, by name ('data', 'sft', 'grpo', 'merge_sft', ...)."""
    run = RunFolder(run_dir)
    found = {name: run.read_metrics(name) for name in METRICS_FILES}
    return {name: doc for name, doc in found.items() if doc is not None}


def qvs_report(
    run_dir: str | Path,
    summaries: dict[str, dict],
    diag: dict,
    frame_figs: list,
    sources: dict[str, str] | None = None,
    later_cues: dict | None = None,
) -> Path:
    """report.html and 05_qvs_metrics.json for a run: QVS-Bench-Sim tables and figures, the
    training stages' metrics from the run folder, and the model-free diagnostics. ``sources``
    (label -> the model each summary evaluated, as notebook 05's ``models``) lets the report
    say whether each GRPO stage improved on its SFT model (:func:`grpo_verdict`);
    ``later_cues`` (:func:`~v2lo_utils.baselines.cue_priors_by_group`), what reading the
    camera's motion is worth for the objects only later frames show (:func:`cue_sentences`)."""
    from .benchmark import HEADLINE_KEYS
    from .figures import (
        compare_figure,
        diagnostics_figure,
        frames_table,
        map_error_figure,
        noise_figure,
        stages_table,
    )

    run = RunFolder(run_dir)
    lean = {label: {k: v for k, v in s.items() if k != "records"} for label, s in summaries.items()}
    later_cues = later_cues or {}
    run.write_metrics("qvs", {"summaries": lean, "diagnostics": diag, "later_cues": later_cues})
    stages = stage_metrics(run_dir)
    training = []
    for name, (before, after, title) in STAGE_PANELS.items():
        if name in stages:
            m = stages[name]
            training.append(
                compare_figure(
                    {before: m["before"], after: m["after"]},
                    HEADLINE_KEYS,
                    f"{title} ({m['before']['n']} rows)",
                )
            )
            if m.get("perception"):
                training.append(perception_sentence(m["perception"]))
            training.append(steps_sentence(after, m.get("train") or {}))
            training += control_verdicts(after, m["after"])
    labels = {model: label for label, model in (sources or {}).items()}
    improved = []
    for name in ("grpo", "grpo_map"):
        if name in stages:
            training.append(reward_sentence(STAGE_PANELS[name][1], stages[name]))
            sft, after = (summaries.get(labels.get(f"{n}_merged", "")) for n in ("sft", name))
            label = labels.get(f"{name}_merged", STAGE_PANELS[name][1])
            improved.append(grpo_verdict(label, stages[name], sft, after))
    sections = [
        (
            "QVS-Bench-Sim",
            [
                stages_table(summaries),
                frames_table(summaries),
                "Scores in percent; macro averages the tasks; format is the paper's map/think/answer "
                "rule; map recall and center error compare the written map with the question's "
                "objects.",
                *verdicts(summaries),
                *cue_sentences(later_cues),
                *improved,
            ],
        ),
        (
            "Training stages (held-out rows, from this run's metrics files)",
            training or ["No stage metrics."],
        ),
        ("Against the number of frames", [*frame_figs, map_error_figure(summaries)]),
        ("Metric against grid maps (no model)", [diagnostics_figure(diag), noise_figure(diag)]),
        ("Numbers", [{"qvs": lean, "stages": stages}]),
    ]
    return write_report(
        run.report,
        "Video2Layout workbook: QVS-Bench report",
        sections,
        meta={"run_dir": str(run.root)},
    )


def _map_mean(summary: dict, key: str) -> float | None:
    vals = [m[key] for m in summary.get("map_by_frames", {}).values() if m.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def verdicts(
    summaries: dict[str, dict],
    baseline: str = "blind baseline",
    question_only: str = "question-only baseline",
) -> list[str]:
    """Plain sentences: where each model beats the baseline, and where it does not; with a
    question-only baseline present, whether its maps place objects better than that (frame-blind)
    reading of the question."""
    if baseline not in summaries:
        return []
    base = summaries[baseline]
    qbase = summaries.get(question_only)
    out = []
    for label, s in summaries.items():
        if label in (baseline, question_only):
            continue
        below = [t for t, v in s["by_task"].items() if v <= base["by_task"].get(t, 0.0)]
        text = (
            f"{label}: overall {100 * s['overall']:.1f}% against {100 * base['overall']:.1f}% blind"
        )
        text += (
            f"; at or below the blind baseline on {', '.join(below)}."
            if below
            else "; above the blind baseline on every task."
        )
        rec, brec = _map_mean(s, "object_recall"), _map_mean(base, "object_recall")
        err, berr = _map_mean(s, "center_error_m"), _map_mean(base, "center_error_m")
        if rec is not None and brec is not None:
            text += f" Map object recall {rec:.2f} against {brec:.2f} blind"
            if err is not None and berr is not None:
                word = "better" if err < berr else "not better"
                text += f"; center error {err:.2f} m against {berr:.2f} m blind ({word})"
            qerr = _map_mean(qbase, "center_error_m") if qbase else None
            if err is not None and qerr is not None:
                word = "better" if err < qerr else "not better"
                text += f" and {qerr:.2f} m for the question's objects at mean boxes ({word})"
            text += "."
        out.append(text)
        cells = direction_cells(label, s, base)
        out += [cells] if cells else []
        out += control_verdicts(label, s, qbase)
    return out


def direction_cells(
    label: str, summary: dict, blind: dict, frames: tuple[str, ...] = ("1", "4")
) -> str | None:
    """Each direction task at few frames (1 and 4) in one sentence: the model's score against
    the blind baseline's (percent) with the cell's question count, and how many cells are above
    blind; None when the summary holds no direction task."""
    from .questions import DIRECTIONS

    counts = summary.get("n_by_task_frames", {})
    parts, above, total = [], 0, 0
    for task in DIRECTIONS:
        got = summary.get("by_task_frames", {}).get(task, {})
        ref = blind.get("by_task_frames", {}).get(task, {})
        cells = []
        for k in (k for k in frames if k in got):
            n = counts.get(task, {}).get(k)
            cells.append(
                f"{100 * got[k]:.0f}/{100 * ref.get(k, 0.0):.0f}" + (f" ({n})" if n else "")
            )
            above += got[k] > ref.get(k, 0.0)
            total += 1
        if cells:
            parts.append(f"{task.removesuffix('_direction')} {', '.join(cells)}")
    if not total:
        return None
    return (
        f"{label}: direction tasks at {' and '.join(frames)} frames, percent against blind "
        f"(questions): {'; '.join(parts)}; above blind in {above} of {total}."
    )


def perception_sentence(p: dict) -> str:
    """The preset's perception stages in one sentence (their held-out metrics)."""
    v, g0, g = (
        p.get("vision") or {},
        p.get("grounding_before") or {},
        p.get("grounding_after") or {},
    )
    text = "The preset's perception stages (held-out"
    if p.get("max_seconds"):
        text += f"; built under a {p['max_seconds']:g} s training budget"
    text += "):"
    if v:
        text += (
            f" vision tower, {_steps(v)}: token box x0 r {_fmt(v.get('token_x0_r'))},"
            f" y0 r {_fmt(v.get('token_y0_r'))};"
        )
    if g:
        text += (
            f" grounding, {_steps(p.get('grounding') or {})}"
            f" ({g['n']} named objects): first corner x0 r {_fmt(g0.get('x0_r'))} ->"
            f" {_fmt(g.get('x0_r'))}, y0 r {_fmt(g0.get('y0_r'))} -> {_fmt(g.get('y0_r'))},"
            f" error {_fmt(g.get('corner_error_m'))} m against {_fmt(g.get('prior_error_m'))} m"
            " at the mean corner."
        )
    if mf := g.get("multi_frame"):
        text += (
            f" On its clips of several frames ({mf['n']} objects; the map is the first frame's):"
            f" x0 r {_fmt(mf.get('x0_r'))}, y0 r {_fmt(mf.get('y0_r'))}, the lookup head's"
            f" attention on the object's tokens in the first frame {_fmt(mf.get('lookup_attention'))}"
            f" (uniform {_fmt(mf.get('lookup_uniform'))})."
        )
    return text


def _steps(stage: dict) -> str:
    """'N steps', with 'of M (stopped by the budget)' where the build budget ended the stage."""
    text = f"{stage.get('steps', '?')} steps"
    if stage.get("stopped_by_budget"):
        text += f" of {stage.get('max_steps')} (stopped by the budget)"
    return text


def reward_sentence(label: str, metrics: dict) -> str:
    """A GRPO stage's held-out paper reward (0.9 accuracy + 0.1 format) before and after, greedy
    and sampled as in training."""
    b, a = metrics["before"], metrics["after"]
    text = (
        f"{label}: held-out paper reward, greedy: SFT {b['mean_reward']:.3f}, after"
        f" {a['mean_reward']:.3f}."
    )
    if "sampled" in b and "sampled" in a:
        bs, as_ = b["sampled"], a["sampled"]
        text += (
            f" Sampled as in training ({as_['samples']} per prompt, temperature"
            f" {as_['temperature']}): SFT {bs['mean_reward']:.3f}, after {as_['mean_reward']:.3f}."
        )
    return text


def grpo_verdict(
    label: str, metrics: dict, sft: dict | None = None, after: dict | None = None
) -> str:
    """Whether a GRPO stage improved on its SFT model: its held-out paper reward (greedy, the
    stage's ``metrics``) rose, and, given both models' QVS-Bench-Sim summaries, the GRPO model's
    overall score is not below the SFT model's 95% bootstrap interval."""
    b, a = metrics["before"]["mean_reward"], metrics["after"]["mean_reward"]
    holds = a > b
    parts = [f"held-out paper reward {'rose' if holds else 'did not rise'}, {b:.3f} -> {a:.3f}"]
    if sft and after and (ci := (sft.get("ci95") or {}).get("overall")):
        inside = after["overall"] >= ci[0]
        holds = holds and inside
        parts.append(
            f"QVS-Bench-Sim overall {100 * after['overall']:.1f}% against the SFT model's"
            f" {100 * sft['overall']:.1f}% ({100 * ci[0]:.1f}-{100 * ci[1]:.1f}):"
            f" {'not below' if inside else 'below'} its 95% interval"
        )
    return f"{label}: better than SFT? {'yes' if holds else 'no'}: {'; '.join(parts)}."


# the SFT head losses (sft.lookup_trainer) and what each head is taught to attend to
HEAD_LOSSES = {
    "lookup": "the first frame's object",
    "copy": "the question's word for each map entry",
    "number": "the map's copies of each think coordinate",
    "option": "the question's text of each option whose letter it writes",
    "frame": "the earlier frames' image tokens (the first frame's: the first token)",
    "seek": "each map entry's object in every frame",
}


def steps_sentence(label: str, train: dict) -> str:
    """The steps a training stage reached, and whether its wall-clock budget ended it."""
    steps, secs = train.get("global_step"), train.get("train_seconds")
    if steps is None:
        return f"{label}: no training figures."
    text = f"{label}: {steps} steps in {secs or 0:.0f} s"
    if train.get("stopped_by_budget"):
        text += ", stopped by its wall-clock budget (max_seconds)"
    if cool := train.get("cooldown"):
        text += f", the learning rate falling linearly to 0 over the run's last {cool['share']:.0%}"
        if cool.get("from_step"):
            text += f" (from step {cool['from_step']}; last factor {cool['last_factor']:.2f})"
    for name, target in HEAD_LOSSES.items():
        if head := train.get(name):
            text += (
                f", with the {name} loss (weight {head['weight']:g}: -log of the {name} head's"
                f" attention on {target}, {head['first']:.2f} -> {head['last']:.2f})"
            )
    if reg := train.get("regression"):
        text += (
            f", with the coordinate regression loss (weight {reg['weight']:g}: squared error of"
            f" the mean-decoded coordinates, {reg['first']:.2f} -> {reg['last']:.2f} m^2)"
        )
    return text + threads_phrase(train.get("threads")) + "."


def threads_phrase(threads: dict | None) -> str:
    """The CPU thread counts a stage ran on (``StageResult.threads``), as a clause for
    :func:`steps_sentence` (", on 2, then 1 thread(s), chosen by timing (...)"); empty when
    none were chosen."""
    choices = (threads or {}).get("choices") or []
    if not choices:
        return ""
    seq = [
        c["threads"]
        for i, c in enumerate(choices)
        if i == 0 or c["threads"] != choices[i - 1]["threads"]
    ]
    rates = ", ".join(f"{n}: {v:.3g}" for n, v in sorted(choices[0]["seconds_per_unit"].items()))
    gated = sum(bool(c.get("gated")) for c in choices)
    ruled = f", {gated} by the kernel check alone" if gated else ""
    return (
        f", on {', then '.join(map(str, seq))} thread(s), chosen by timing (first probe, s per"
        f" step: {rates}; {len(choices)} probes{ruled})"
    )


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


MIN_OBJECTS = 30  # matched objects below which the controls' verdict is "too few to tell"


def view_sentence(
    label: str, group: str, summary: dict, question_only: dict | None = None
) -> str | None:
    """Where a frame-count group's map error lies: the objects the first frame shows against
    those only later frames show (placing them needs the camera's motion), each beside the
    question-only baseline's error on the same kind; None without ``map_by_view``."""
    view = (summary.get("map_by_view") or {}).get(group) or {}
    qview = ((question_only or {}).get("map_by_view") or {}).get(group) or {}
    parts = []
    for key, words in (
        ("first_frame", "shown by the first frame"),
        ("later_frames", "only by later frames"),
    ):
        m = view.get(key) or {}
        if not m.get("n_objects"):
            continue
        q_err = (qview.get(key) or {}).get("center_error_m")
        parts.append(
            f"{words} {m['center_error_m']:.2f} m (r_x {_fmt(m.get('r_x'))}, r_y "
            f"{_fmt(m.get('r_y'))}; {m['n_objects']} objects; question-only {_fmt(q_err)} m)"
        )
    if not parts:
        return None
    return f"{label}, {group} frames, center error of the objects " + "; ".join(parts) + "."


def cue_sentences(later_cues: dict) -> list[str]:
    """Per frame-count group, what knowing the camera's motion is worth for the objects only
    later frames show (:func:`~v2lo_utils.baselines.cue_priors_by_group`): the error of a prior
    that knows only that the first frame does not show them, or also the frame that shows the
    object and the turn direction, or that frame's heading; the models' errors on those objects
    are in their view sentences."""
    out = []
    for group, priors in later_cues.items():
        err = {k: _fmt(v.get("center_error_m")) for k, v in priors.items()}
        out.append(
            f"The objects only later frames show, {group} frames "
            f"({(priors.get('none') or {}).get('n', 0)}): a prior fitted on the training set errs"
            f" by {err.get('none', '-')} m knowing only that the first frame does not show them,"
            f" {err.get('frame + turn', '-')} m knowing which frame shows the object and which"
            f" way the camera turns, {err.get('heading', '-')} m knowing that frame's heading"
            " from the first camera's: what reading the camera's motion from the frames is worth."
        )
    return out


STEP_NAMES = {
    "centroids": "centroids from its map",
    "frame": "frame from its centroids",
    "v": "v from its centroids",
    "signs": "signs from its v and frame",
    "quadrant": "quadrant from its signs",
    "option": "option letter from its quadrant",
}


def think_steps_text(shares: dict | None) -> str:
    """Where the direction thinks stop computing (:func:`~v2lo_utils.benchmark.think_step_shares`):
    per step, the share that follows from the think's own earlier numbers; '' when none judged."""
    if not shares or not shares.get("n"):
        return ""
    parts = [
        f"{name} {100 * shares[key]:.0f}%"
        for key, name in STEP_NAMES.items()
        if shares.get(key) is not None
    ]
    return (
        f"Its direction thinks, step by step, each judged on the think's own earlier numbers "
        f"({shares['n']} thinks): {', '.join(parts)}."
    )


def control_verdicts(label: str, summary: dict, question_only: dict | None = None) -> list[str]:
    """Plain sentences from the controls: per frame-count group, whether the model's maps come
    from the frames (its center error below both the same rows with another scene's frames and
    the question-only baseline, with the per-axis r; "too few to tell" under MIN_OBJECTS matched
    objects), and whether its answers come from its maps (consistency: its answer scored against
    the answer solve computes from its own map) with the score of those answers of its maps
    against its own answers' (what its maps are worth beside what its reasoning makes of them).

    ``question_only``: that baseline's summary; without it, the summary's own
    ``controls.question_only`` groups (as :func:`~v2lo_utils.evaluation.evaluate_model` writes)."""
    groups = summary.get("map_by_group") or {}
    controls = summary.get("controls") or {}
    swapped = controls.get("swapped") or {}
    qgroups = (question_only or {}).get("map_by_group") or controls.get("question_only") or {}
    out = []
    for g in ("1-4", "8-16"):
        m = groups.get(g) or {}
        err, s_err = m.get("center_error_m"), (swapped.get(g) or {}).get("center_error_m")
        q_err = (qgroups.get(g) or {}).get("center_error_m")
        if err is None or (s_err is None and q_err is None):
            continue
        beats = [x for x in (s_err, q_err) if x is not None]
        word = "yes" if all(err < x for x in beats) else "no"
        if m.get("n_objects", 0) < MIN_OBJECTS:
            word = "too few matched objects to tell"
        out.append(
            f"{label}, {g} frames: maps from the frames? {word}: center error {err:.2f} m against "
            f"{_fmt(s_err)} m with another scene's frames and {_fmt(q_err)} m for the "
            f"question-only baseline; r_x {_fmt(m.get('r_x'))}, r_y {_fmt(m.get('r_y'))} "
            f"({m.get('n_objects', 0)} objects)."
        )
        if view := view_sentence(label, g, summary, question_only):
            out.append(view)
    every = groups.get("all") or {}
    cons, own = every.get("consistency"), every.get("map_answer")
    if cons is not None:
        word = "yes" if cons >= 0.5 else "no"
        text = (
            f"{label}: answers from its maps? {word}: {100 * cons:.1f}% agreement with the "
            f"answers solve computes from its own maps."
        )
        if own is not None and summary.get("answer_score") is not None:
            text += (
                f" Those answers score {100 * own:.1f}%; its own answers"
                f" {100 * summary['answer_score']:.1f}%."
            )
        if (follows := summary.get("think_follows")) is not None:
            text += (
                f" Its letter is the option its think names in {100 * follows:.1f}% of the"
                f" {summary.get('think_named', 0)} answers whose think names one."
            )
        if step_text := think_steps_text(summary.get("think_steps")):
            text += f" {step_text}"
        out.append(text)
    return out


def ablation_report(
    run_dir: str | Path,
    results: list[dict],
    claims: list[dict],
    variants: list[dict],
    figures: list,
    meta: dict | None = None,
) -> dict[str, Path]:
    """The ablation's report in the run folder (``results``: the jobs' results, for their
    steps): ``ablation_report.html`` (the claims table, the variants' scores, the figures),
    ``ablation_claims.md`` (the claims and variants tables, as the README shows them) and
    ``ablation.json`` (the numbers). Returns the paths."""
    from .claims import NULL_MARGIN, claims_markdown, unequal_budgets, variants_markdown

    run = Path(run_dir)
    rule = (
        "Effects are variant A minus variant B in points (0-100) on the same questions, averaged "
        "over seeds; the 95% interval is a two-level bootstrap (seeds, then questions). "
        f"Reproduced: the interval is above 0. Not reproduced: it lies below {NULL_MARGIN} "
        "points. Otherwise inconclusive at this scale."
    )
    short = unequal_budgets(results)
    if short:
        rule += f" Not at equal budget (a wall-clock cap stopped them short): {'; '.join(short)}."
    text = f"{claims_markdown(claims)}\n\n{rule}\n\n{variants_markdown(variants)}\n"
    md = run / "ablation_claims.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text, encoding="utf-8")
    doc = run / "ablation.json"
    doc.write_text(json.dumps({"claims": claims, "variants": variants, "meta": meta}, indent=2))
    table = [{k: r[k] for k in ("claim", "paper", "effect", "ci", "verdict")} for r in claims]
    sections = [
        ("Claims", [rule, *table]),
        ("Variants", variants),
        ("Figures", figures),
    ]
    html_path = write_report(
        run / "ablation_report.html", "Ablation: the paper's claims", sections, meta
    )
    return {"html": html_path, "markdown": md, "json": doc}
