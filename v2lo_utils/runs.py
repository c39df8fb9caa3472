"""The run folder and the pipeline, as code: stage folders, metrics files, held-out rows.

    outputs/runs/<run-id>/
        sft/ (checkpoints, final/)    sft_merged/    grpo/ (checkpoints, final/)    grpo_merged/
        predictions/                  report.html    NN_<stage>_metrics.json    run.json, run.log

Notebooks 02-05 and the report find every stage's output here, so profiles hold only what
differs between them. Every stage is measured before and after on the same seeded held-out rows
(:func:`held_out_rows`, and :meth:`RunFolder.held_out` after SFT).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

# the order the stages run in: data, SFT, merge, GRPO, merge, analysis ('notebook:variant' runs a
# notebook again with the variant's parameters; the merge notebook's variant is its stage)
PIPELINE = (
    "01_data_inspection",
    "02_sft",
    "04_merge:sft",
    "03_grpo",
    "04_merge:grpo",
    "05_qvs_bench_analysis",
)
# the pipelines a profile names (its 'pipeline' key, or a list of steps): the paper's, and the
# same with GRPO run again from the same SFT model with the project's map-aware reward
PIPELINES = {
    "paper": PIPELINE,
    "map_reward": (*PIPELINE[:-1], "03_grpo:grpo_map", "04_merge:grpo_map", PIPELINE[-1]),
}
# training stages; grpo_map is GRPO again from the same SFT model with the map-aware reward
# (profiles run it as '03_grpo:grpo_map', then '04_merge:grpo_map')
STAGES = ("sft", "grpo", "grpo_map")
METRICS_FILES = {
    "data": "01_data_metrics.json",
    "sft": "02_sft_metrics.json",
    "grpo": "03_grpo_metrics.json",
    "grpo_map": "03_grpo_map_metrics.json",
    "merge_sft": "04_merge_sft_metrics.json",
    "merge_grpo": "04_merge_grpo_metrics.json",
    "merge_grpo_map": "04_merge_grpo_map_metrics.json",
    "qvs": "05_qvs_metrics.json",
}


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the paths of what its stages write."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def stage_dir(self, stage: str) -> Path:
        """Where a training stage (one of :data:`STAGES`) writes checkpoints and ``final/``."""
        return self.root / _stage(stage)

    def final(self, stage: str) -> Path:
        """The stage's trained model or LoRA adapter."""
        return self.stage_dir(stage) / "final"

    def merged(self, stage: str) -> Path:
        """The stage's merged, standalone model (notebook 04)."""
        return self.root / f"{_stage(stage)}_merged"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def model(self, source: str) -> str:
        """A model source as profiles name it: a stage's output in this run by name
        ('sft_final', 'sft_merged', 'grpo_final', 'grpo_merged', 'grpo_map_merged', ...), else the
        source itself (a preset name or a folder)."""
        for stage in STAGES:
            if source == f"{stage}_final":
                return str(self.final(stage))
            if source == f"{stage}_merged":
                return str(self.merged(stage))
        return source

    def metrics_path(self, name: str) -> Path:
        if name not in METRICS_FILES:
            raise KeyError(f"unknown metrics {name!r}; known: {', '.join(METRICS_FILES)}")
        return self.root / METRICS_FILES[name]

    def write_metrics(self, name: str, doc: dict) -> Path:
        """Write a stage's metrics (JSON) into the run folder; returns the file."""
        path = self.metrics_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2))
        return path

    def read_metrics(self, name: str) -> dict | None:
        """A stage's metrics, or None when that stage has not run here."""
        path = self.metrics_path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def measured_before(self, settings: dict) -> dict | None:
        """The "before" measurement another stage of this run made with exactly these
        ``settings`` (model, backend, held-out ids, sampling: what its metrics store as
        ``before_settings``), else None. Generation is seeded, so the two GRPO stages from one SFT
        model measure it once."""
        for stage in STAGES:
            doc = self.read_metrics(stage) or {}
            if doc.get("before_settings") == settings and "before" in doc:
                return doc["before"]
        return None

    def held_out(
        self, splits: dict[str, list[dict]], n: int, max_frames: int | None = None
    ) -> list[dict]:
        """The rows a stage is measured on: those SFT was measured on in this run (its metrics'
        ``eval_ids``), so that "after SFT" and "before GRPO" are the same rows; else
        :func:`held_out_rows`."""
        ids = (self.read_metrics("sft") or {}).get("eval_ids")
        if ids:
            by_id = {r["id"]: r for rows in splits.values() for r in rows}
            if all(i in by_id for i in ids):
                return [by_id[i] for i in ids]
        return held_out_rows(splits, n, max_frames)


def _stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    return stage


def held_out_rows(
    splits: dict[str, list[dict]], n: int, max_frames: int | None = None, seed: int = 0
) -> list[dict]:
    """The seeded held-out rows every stage is measured on, before and after: ``n`` of the
    validation rows (the training rows when there are none) of at most ``max_frames`` frames."""
    pool = splits.get("val") or splits.get("train") or []
    pool = [r for r in pool if max_frames is None or r["num_frames"] <= max_frames]
    return random.Random(seed).sample(pool, min(n, len(pool)))
