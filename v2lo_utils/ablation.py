"""The ablation of the paper's claims: variants of one recipe, trained at equal budget and seed,
evaluated on the same QVS-Bench-Sim questions (notebook 06; :mod:`~v2lo_utils.claims` reads the
results).

A variant changes one thing of the recipe's SFT (:data:`VARIANTS`): the target's form (metric
map, grid map, no map, answer only; :mod:`~v2lo_utils.targets`), the training frame mix, or GRPO
after the metric variant's SFT model of the same seed. Every job (a variant at a seed) writes

    <out_dir>/<variant>/seed<k>/
        sft/ or grpo/      checkpoints and final/ (training resumes from the last checkpoint)
        merged/            the merged model, when the recipe trains a LoRA adapter
        predictions.jsonl  append-only, resumable (:func:`~v2lo_utils.evaluation.evaluate_benchmark`)
        result.json        written last: a job that has it is done and never trains again
                           (evaluated again if its evaluation settings changed)

so an interrupted ablation resumes without retraining finished variants. Jobs run ``workers`` at
a time, each in a process of ``threads`` torch threads (on a 2-core Xeon two one-thread SFT jobs
made 3.8 steps a second together, where the demo's two-thread SFT makes about 2.9), or in this
process with one worker, as on a GPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import V2loError
from .jsonl import atomic_write


class AblationError(V2loError, RuntimeError):
    """Jobs of an ablation failed; the message names each job and its error (finished jobs are
    kept)."""


@dataclass(frozen=True)
class Variant:
    """What a variant changes in the recipe: the target's form, the share of the 8-16-frame rows
    kept (None: the recipe's), or GRPO from another variant's SFT model (``grpo_from``)."""

    form: str = "metric"
    long_fraction: float | None = None
    grpo_from: str | None = None


VARIANTS: dict[str, Variant] = {
    "metric": Variant(),  # the recipe itself
    "grid": Variant(form="grid"),
    "no_map": Variant(form="no_map"),
    "answer_only": Variant(form="answer_only"),
    "metric_1to4": Variant(long_fraction=0.0),  # the 1-4-frame rows only
    "metric_grpo": Variant(grpo_from="metric"),  # SFT (the metric variant's), then GRPO
}
# the per-question fields a result keeps (benchmark.score_row's)
RECORD_KEYS = (
    "id",
    "task",
    "num_frames",
    "score",
    "format_ok",
    "extraction_failed",
    "map_recall",
    "map_center_error_m",
    "map_placement",
)


@dataclass(frozen=True)
class Job:
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"


def plan(variants: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """The jobs, seed by seed (an interrupted run keeps whole seeds of every variant), GRPO
    variants after the variant they start from."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; known: {', '.join(VARIANTS)}")
    for v in variants:
        source = VARIANTS[v].grpo_from
        if source is not None and source not in variants:
            raise ValueError(f"variant {v!r} starts from {source!r}: list it too")
    first = [v for v in variants if VARIANTS[v].grpo_from is None]
    then = [v for v in variants if VARIANTS[v].grpo_from is not None]
    return [Job(v, s) for s in seeds for v in first] + [Job(v, s) for s in seeds for v in then]


def job_dir(out_dir: str | Path, job: Job) -> Path:
    return Path(out_dir) / job.variant / f"seed{job.seed}"


def read_result(out_dir: str | Path, job: Job) -> dict | None:
    """A finished job's result, or None."""
    path = job_dir(out_dir, job) / "result.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sft_params(cfg: dict, job: Job):
    """The job's SFTParams: the recipe's SFT parameters (``cfg['sft']``), the variant's form and
    frame mix, the job's seed and folder."""
    from .sft import SFTParams

    v = VARIANTS[job.variant]
    values = dict(cfg["sft"])
    if v.long_fraction is not None:
        values["long_fraction"] = v.long_fraction
    return SFTParams.from_parameters(
        values,
        seed=job.seed,
        output_dir=str(job_dir(cfg["out_dir"], job) / "sft"),
        target_form=v.form,
        grid_size=cfg["grid_size"],
        extra=_quiet(cfg),
    )


def _quiet(cfg: dict) -> dict:
    """Trainer arguments of a job: without its step bar where jobs run in worker processes (their
    bars would interleave; each job's start and end is logged instead)."""
    return {"disable_tqdm": True} if cfg.get("quiet") else {}


def grpo_params(cfg: dict, job: Job, model_source: str):
    """The job's GRPOParams: the recipe's GRPO parameters (``cfg['grpo']``) from ``model_source``."""
    from .grpo import GRPOParams

    return GRPOParams.from_parameters(
        dict(cfg["grpo"]),
        seed=job.seed,
        output_dir=str(job_dir(cfg["out_dir"], job) / "grpo"),
        model_source=model_source,
        extra=_quiet(cfg),
    )


def _standalone(final: Path, folder: Path, cfg: dict) -> str:
    """A stage's model as a folder that loads alone: ``final`` itself (full training), else the
    LoRA adapter merged into ``folder`` (once)."""
    from .models import adapter_base

    if adapter_base(final) is None:
        return str(final)
    if not (folder / "v2lo_merge.json").is_file():  # written last: a killed merge runs again
        from .dataset import Dataset
        from .merge import merge_stage

        ds = Dataset.load(cfg["sft"]["data_dir"])
        merge_stage(final, folder, ds.rows["train"][:2], ds.root)
    return str(folder)


def _settings(params) -> dict:
    """A stage's parameters as its summary records them (not its folder or trainer extras)."""
    from dataclasses import fields

    skip = ("output_dir", "extra")
    return {f.name: getattr(params, f.name) for f in fields(params) if f.name not in skip}


def _train(stage: str, params, train: Callable) -> dict:
    """Train (or resume) one stage, or read the summary a finished one left. A finished stage
    trained with other parameters (another budget or recipe in the same run folder) raises
    AblationError naming them: its model would not be this job's."""
    done = Path(params.output_dir) / "train.json"
    settings = _settings(params)
    if done.is_file() and (Path(params.output_dir) / "final").is_dir():
        summary = json.loads(done.read_text())
        old = summary.get("settings", settings)
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise AblationError(
                f"{params.output_dir} was trained with other parameters ({', '.join(changed)}): "
                "run the ablation in another run folder (a new run id), or delete that folder"
            )
        return summary
    result = train(params)
    summary = {
        "settings": settings,
        "stage": stage,
        "final": str(result.final_dir),
        "steps": result.global_step,
        "max_steps": params.max_steps,
        "train_seconds": result.train_seconds,
        "stopped_by_budget": result.stopped_by_budget,
    }
    atomic_write(done, json.dumps(summary, indent=2))
    return summary


def evaluation_settings(cfg: dict) -> dict:
    """What a job's result was evaluated with: a result made with other settings is evaluated
    again (its model is kept)."""
    keys = ("qvs_dir", "max_questions", "grid_size", "max_new_tokens")
    return {k: cfg[k] for k in keys}


def benchmark_rows(cfg: dict, form: str) -> list[dict]:
    """The evaluation questions (``cfg['max_questions']`` of the benchmark with its shares), their
    prompts asking for ``form``."""
    from .benchmark import subset
    from .loaders import load_benchmark
    from .targets import form_row

    rows = subset(load_benchmark(cfg["qvs_dir"]), cfg["max_questions"])
    return [form_row(r, form, cfg["grid_size"]) for r in rows]


def _record(rec: dict) -> dict:
    """What a result keeps of a question's record; a map that did not parse places nothing (0)."""
    out = {k: rec.get(k) for k in RECORD_KEYS}
    if "map" in rec and rec["map"] is None:
        out["map_placement"] = 0.0
    return out


def baseline_results(cfg: dict) -> list[dict]:
    """The blind and question-only baselines on the ablation's questions, as results (variant
    ``blind baseline``, ``question-only baseline``; seed 0, no steps): the level a variant must
    beat before its comparisons say anything about maps or reasoning."""
    from .baselines import blind_predictions, question_only_predictions
    from .benchmark import score_benchmark
    from .dataset import Dataset

    rows = benchmark_rows(cfg, "metric")
    train = Dataset.load(cfg["sft"]["data_dir"]).rows["train"]
    out = []
    for name, predict in (
        ("blind", blind_predictions),
        ("question-only", question_only_predictions),
    ):
        summary = score_benchmark(rows, predict(train, rows), n_boot=1)
        records = [_record(rec) for rec in summary["records"]]
        out.append({"variant": f"{name} baseline", "seed": 0, "steps": 0, "records": records})
    return out


def run_job(job: Job, cfg: dict) -> dict:
    """Train and evaluate one job (resuming whatever it had done); writes and returns its result."""
    from .evaluation import evaluate_benchmark
    from .grpo import train_grpo
    from .models import free_memory, load_model, model_fingerprint
    from .sft import train_sft

    t0 = time.perf_counter()
    folder = job_dir(cfg["out_dir"], job)
    folder.mkdir(parents=True, exist_ok=True)
    v = VARIANTS[job.variant]
    if v.grpo_from is None:
        train = _train("sft", sft_params(cfg, job), train_sft)
    else:
        source = read_result(cfg["out_dir"], Job(v.grpo_from, job.seed))
        if source is None:
            raise AblationError(f"{job.name}: {v.grpo_from}/seed{job.seed} has not finished")
        train = _train("grpo", grpo_params(cfg, job, source["model"]), train_grpo)
    free_memory()  # the trainer's model, before the merge and evaluation load theirs (7B)
    model = _standalone(Path(train["final"]), folder / "merged", cfg)
    rows = benchmark_rows(cfg, v.form)
    loaded = load_model(model, cfg["backend"])
    settings = {"model": model, "weights": model_fingerprint(loaded.path), "form": v.form}
    summary = evaluate_benchmark(
        loaded.model,
        loaded.processor,
        rows,
        Path(cfg["qvs_dir"]),
        folder / "predictions.jsonl",
        cfg["max_new_tokens"],
        cfg["batch_size"],
        n_boot=1,
        progress=False,
        settings=settings,
    )
    del loaded
    free_memory()
    result = {
        **asdict(job),
        "form": v.form,
        "model": model,
        "steps": train["steps"],
        "train": train,
        "seconds": time.perf_counter() - t0,
        "score": summary["overall"],
        "evaluation": evaluation_settings(cfg),
        "records": [_record(rec) for rec in summary["records"]],
    }
    atomic_write(folder / "result.json", json.dumps(result, indent=2))
    return result


def prepare(cfg: dict) -> None:
    """What every job shares, done once before any starts: a preset named as the model is built
    (two workers must not build it at once)."""
    from .models import resolve_source
    from .presets import PRESETS
    from .training import StageParams

    source = cfg["sft"]["model_source"]
    if source in PRESETS:
        cache = cfg["sft"].get("model_cache", StageParams.model_cache)
        resolve_source(source, cache, cfg["preset_seconds"])


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _progress_log(path: Path, log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` that also appends each line, timed, to ``path``, and in a Jupyter kernel writes it
    to the kernel's own stderr too (the terminal of ``v2lo run``, which shows no cell output)."""
    import sys
    from datetime import UTC, datetime

    path.parent.mkdir(parents=True, exist_ok=True)

    def out(line: str) -> None:
        stamped = f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(stamped + "\n")
        if sys.__stderr__ is not None and sys.stderr is not sys.__stderr__:
            print(f"[ablation] {stamped}", file=sys.__stderr__, flush=True)
        log(line)

    return out


def run_ablation(
    cfg: dict,
    variants: Sequence[str],
    seeds: Sequence[int],
    workers: int = 1,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Every job of ``variants`` x ``seeds`` not done yet, ``workers`` at a time; returns all the
    results, finished earlier or now. Each job's start and end is logged (``log``, and
    ``<out_dir>/progress.log``). A failed job is named in an AblationError raised after
    the others (and their dependents are skipped); finished jobs stay on disk.

    ``cfg``: ``out_dir``, ``sft`` and ``grpo`` (the recipe's stage parameters), ``qvs_dir``,
    ``max_questions``, ``grid_size``, ``max_new_tokens``, ``batch_size``, ``backend``,
    ``preset_seconds``."""
    from tqdm.auto import tqdm

    log = _progress_log(Path(cfg["out_dir"]) / "progress.log", log)
    jobs = plan(variants, seeds)
    if workers > 1 and _on_gpu():
        log(f"a GPU: jobs run one at a time in this process, not {workers} at once")
        workers = 1
    found = {j: r for j in jobs if (r := read_result(cfg["out_dir"], j)) is not None}
    done = {j: r for j, r in found.items() if r.get("evaluation") == evaluation_settings(cfg)}
    for j in [j for j in found if j not in done]:
        log(f"{j.name}: evaluated with other settings ({found[j].get('evaluation')}): again")
    todo = [j for j in jobs if j not in done]
    for j in done:
        log(f"{j.name}: done earlier ({done[j]['steps']} steps, score {done[j]['score']:.3f})")
    bar = tqdm(total=len(jobs), initial=len(done), desc="ablation jobs", unit="job")
    failed: dict[Job, str] = {}
    if todo:
        prepare(cfg)

    def ready(j: Job) -> bool:
        source = VARIANTS[j.variant].grpo_from
        return source is None or Job(source, j.seed) in done

    def finish(j: Job, result: dict | None, error: BaseException | None) -> None:
        if error is not None:
            failed[j] = f"{type(error).__name__}: {error}"
            log(f"{j.name}: FAILED {failed[j]}")
        else:
            done[j] = result
            log(
                f"{j.name}: {result['steps']} steps, {result['seconds']:.0f} s, "
                f"score {result['score']:.3f}"
            )
        bar.update(1)

    def blocked(j: Job) -> bool:
        source = VARIANTS[j.variant].grpo_from
        return source is not None and Job(source, j.seed) in failed

    if workers <= 1:
        for j in todo:
            if blocked(j):
                finish(j, None, AblationError(f"{VARIANTS[j.variant].grpo_from} failed"))
                continue
            try:
                finish(j, run_job(j, cfg), None)
            except Exception as err:  # named in the AblationError below
                finish(j, None, err)
    else:
        from .workers import parent_bound_pool

        cfg = {**cfg, "quiet": True}
        waiting = list(todo)
        running: dict[Future, Job] = {}
        with parent_bound_pool(workers, threads, "spawn") as pool:
            while waiting or running:
                for j in [j for j in waiting if blocked(j)]:
                    waiting.remove(j)
                    finish(j, None, AblationError(f"{VARIANTS[j.variant].grpo_from} failed"))
                while len(running) < workers and (starts := [j for j in waiting if ready(j)]):
                    waiting.remove(starts[0])
                    running[pool.submit(run_job, starts[0], cfg)] = starts[0]
                    log(f"{starts[0].name}: started")
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    j = running.pop(fut)
                    error = fut.exception()
                    finish(j, None if error else fut.result(), error)
    bar.close()
    if failed:
        lines = "; ".join(f"{j.name}: {e}" for j, e in failed.items())
        raise AblationError(f"{len(failed)} of {len(jobs)} ablation jobs failed ({lines})")
    return [done[j] for j in jobs]
