"""The 7B recipe's code paths at 7B shape, timed: one script for a short GPU slot.

    python bench/bench_gpu.py [--time-limit 480] [--steps 4]   # a GPU machine (`make gpu-check`)
    python bench/bench_gpu.py --smoke                          # CPU, a tiny shape (`make test`)

A randomly initialised Qwen2.5-VL with the 7B's published shape (``presets.SHAPE_7B``: hidden
3584, 28 layers, 28/4 heads, vision depth 32; the project's tokenizer padded to 152,064 rows, so
memory is the 7B's) is built into a local folder; no weights are downloaded. Then, each through
the project's own entry points and each for a few steps:

- ``sft_transformers`` / ``sft_unsloth``: LoRA SFT (r 64, alpha 128, bf16, batch 2, 4-16 frames
  at 448 px) with ``train_sft`` on the same rows: tokens/s, peak GPU memory, finite loss;
- ``merge``: ``merge_stage`` of the SFT adapter with its logit parity check;
- ``grpo_hf`` / ``grpo_vllm``: LoRA GRPO (4 generations, 500-token completions) with
  ``train_grpo``, rollouts by transformers or by vLLM colocated: steps/s;
- ``eval_hf`` / ``eval_vllm``: ``v2lo eval`` on QVS-Bench-Sim with the merged model: questions/s;
- ``sft_ddp`` / ``sft_zero2``: a 2-process accelerate launch of ``v2lo train sft`` (DDP, and
  DeepSpeed ZeRO-2) where more than one GPU is present.

Each part runs in its own process (Unsloth patches TRL on import; vLLM holds GPU memory), under
what is left of ``--time-limit``; a part that fails is reported with its error and the next one
still runs; a part whose hardware or package is absent is reported as skipped with the reason.
Writes one JSON of figures (after every part) and prints a table. ``--smoke`` runs the same
code on the CPU with a tiny shape and 56 px frames, so that the script cannot rot.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # v2lo_utils from this checkout, installed or not
PARTS = (
    "build",
    "sft_transformers",
    "sft_unsloth",
    "merge",
    "grpo_hf",
    "grpo_vllm",
    "eval_hf",
    "eval_vllm",
    "sft_ddp",
    "sft_zero2",
)


# what a part needs beyond the CPU: a CUDA GPU, a package, a GPU count
REQUIRES = {
    "sft_unsloth": dict(cuda=True, package="unsloth"),
    "grpo_vllm": dict(cuda=True, package="vllm"),
    "eval_vllm": dict(cuda=True, package="vllm"),
    "sft_ddp": dict(gpus=2),
    "sft_zero2": dict(gpus=2, package="deepspeed"),
}


class Skip(Exception):
    """A part whose hardware or package is absent here."""


def settings(smoke: bool, steps: int) -> dict:
    """Sizes per mode: the GPU run at the paper's shape, the smoke run at a tiny one."""
    if smoke:
        return dict(
            image_size=56, scenes=3, questions=20, steps=steps or 2, max_length=0,
            completion=16, eval_questions=4, eval_tokens=16, lora_r=8, lora_alpha=16,
        )  # fmt: skip
    return dict(
        image_size=448, scenes=8, questions=40, steps=steps or 4, max_length=8192,
        completion=500, eval_questions=8, eval_tokens=500, lora_r=64, lora_alpha=128,
    )  # fmt: skip


def shape(smoke: bool):
    from v2lo_utils.presets import PRESETS, SHAPE_7B

    # the tiny preset, its vocabulary padded and its embeddings untied as the 7B's are
    return replace(PRESETS["tiny"], tie_embeddings=False, padded_vocab=1024) if smoke else SHAPE_7B


# ---------------------------------------------------------------------------------------------
# the parts (each runs in a child process: `bench_gpu.py --part NAME --work DIR [--smoke]`)


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        self.times[state.global_step] = time.perf_counter()


def steady_rate(clock, log_history: list[dict], key: str | None) -> float | None:
    """Per-second rate from the second step on (the first pays for warm-up): ``key``'s cumulative
    count in the logs (tokens), or steps when ``key`` is None."""
    steps = sorted(clock.times)
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]
    seconds = clock.times[last] - clock.times[first]
    if key is None:
        return (last - first) / seconds
    counts = {h["step"]: float(h[key]) for h in log_history if key in h and "step" in h}
    if first not in counts or last not in counts:
        return None
    return (counts[last] - counts[first]) / seconds


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _need(cuda: bool = False, package: str | None = None, gpus: int = 0) -> None:
    import torch

    if (cuda or gpus) and not torch.cuda.is_available():
        raise Skip("needs a CUDA GPU")
    if gpus and torch.cuda.device_count() < gpus:
        raise Skip(f"needs {gpus} GPUs ({torch.cuda.device_count()} present)")
    if package and importlib.util.find_spec(package) is None:
        raise Skip(f"needs {package} (pip install -e .[gpu])")


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _stage(work: Path, s: dict, out: str) -> dict:
    """What the SFT and GRPO parts' parameters share: LoRA on the built model, a few steps."""
    return dict(
        data_dir=str(work / "data"),
        output_dir=str(work / out),
        model_source=str(work / "model"),
        mode="lora",
        lora_r=s["lora_r"],
        lora_alpha=s["lora_alpha"],
        max_steps=s["steps"],
        save_steps=10**6,
    )


def _peak_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def part_build(work: Path, s: dict, smoke: bool) -> dict:
    import torch

    from v2lo_utils.dataset import BuildConfig, build_qvs_bench, build_training_set
    from v2lo_utils.models import count_parameters, load_model
    from v2lo_utils.presets import build_random_model

    t = time.perf_counter()
    cfg = BuildConfig(
        scenes=s["scenes"],
        seed=0,
        image_size=s["image_size"],
        frame_counts=(4, 8, 12, 16),  # SFT and GRPO on 4-16 frames
        workers=min(8, os.cpu_count() or 1),
        questions=s["questions"],
    )
    counts = build_training_set(work / "data", cfg)
    build_qvs_bench(work / "qvs", cfg)
    data_s = time.perf_counter() - t
    t = time.perf_counter()
    cuda = torch.cuda.is_available()
    folder = work / "model"
    if not folder.exists():
        build_random_model(
            shape(smoke),
            folder,
            "7b-shape" if not smoke else "tiny-shape",
            device="cuda" if cuda else "cpu",
            dtype=torch.bfloat16 if cuda else torch.float32,
        )
    build_s = time.perf_counter() - t
    loaded = load_model(folder, "transformers")
    n = count_parameters(loaded.model)["total"]
    return {
        "train_rows": counts["train"],
        "data_s": round(data_s, 1),
        "build_s": round(build_s, 1),
        "parameters_b": round(n / 1e9, 3),
        "vocab": loaded.model.config.text_config.vocab_size,
        "folder_gb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**30, 2),
    }


def _sft(work: Path, s: dict, backend: str, out: str) -> dict:
    import torch

    from v2lo_utils.sft import SFTParams, train_sft

    _reset_peak()
    p = SFTParams(
        **_stage(work, s, out),
        backend=backend,
        batch_size=2,
        learning_rate=1e-4,
        max_frames=16,
        max_length=s["max_length"] or None,
        gradient_checkpointing=torch.cuda.is_available(),
        logging_steps=1,
    )
    clock = StepClock()
    result = train_sft(p, callbacks=[clock])
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    return {
        "steps": result.global_step,
        "tokens_per_s": steady_rate(clock, result.log_history, "num_tokens"),
        "peak_gpu_gb": _peak_gb(),
        "loss_finite": bool(losses) and all(math.isfinite(v) for v in losses),
        "last_loss": losses[-1] if losses else None,
        "train_s": round(result.train_seconds, 1),
        "adapter": str(result.final_dir),
    }


def part_sft_transformers(work: Path, s: dict, smoke: bool) -> dict:
    return _sft(work, s, "transformers", "sft_transformers")


def part_sft_unsloth(work: Path, s: dict, smoke: bool) -> dict:
    return _sft(work, s, "unsloth", "sft_unsloth")


def part_merge(work: Path, s: dict, smoke: bool) -> dict:
    from v2lo_utils.dataset import Dataset
    from v2lo_utils.merge import merge_stage

    adapter = work / "sft_transformers" / "final"
    if not adapter.is_dir():
        raise RuntimeError(f"no SFT adapter at {adapter} (sft_transformers failed)")
    ds = Dataset.load(work / "data")
    rows = (ds.rows.get("val") or ds.rows["train"])[:2]
    t = time.perf_counter()
    report = merge_stage(adapter, work / "merged", rows, ds.root)
    return {
        "seconds": round(time.perf_counter() - t, 1),
        "parity_ok": report.parity_ok,
        "max_abs_logit_diff": report.max_abs_logit_diff,
        "tolerance": report.tolerance,
        "out_gb": round(report.out_mb / 1024, 2),
    }


def _grpo(work: Path, s: dict, use_vllm: bool, out: str) -> dict:
    from v2lo_utils.grpo import GRPOParams, train_grpo

    _reset_peak()
    p = GRPOParams(
        **_stage(work, s, out),
        backend="transformers",
        batch_size=4,
        num_generations=4,
        max_completion_length=s["completion"],
        use_vllm=use_vllm,
    )
    clock = StepClock()
    result = train_grpo(p, callbacks=[clock])
    rewards = [h["reward"] for h in result.log_history if "reward" in h]
    return {
        "steps": result.global_step,
        "steps_per_s": steady_rate(clock, result.log_history, None),
        "peak_gpu_gb": _peak_gb(),
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        "train_s": round(result.train_seconds, 1),
    }


def part_grpo_hf(work: Path, s: dict, smoke: bool) -> dict:
    return _grpo(work, s, False, "grpo_hf")


def part_grpo_vllm(work: Path, s: dict, smoke: bool) -> dict:
    return _grpo(work, s, True, "grpo_vllm")


def _eval(work: Path, s: dict, engine: str) -> dict:
    from v2lo_utils.cli import main as v2lo

    model = work / "merged" if (work / "merged" / "config.json").is_file() else work / "model"
    out = work / f"eval_{engine}.jsonl"
    out.unlink(missing_ok=True)
    n = s["eval_questions"] * (4 if engine == "vllm" else 1)
    args = ["eval", "--benchmark", str(work / "qvs"), "--model", str(model), "--out", str(out)]
    args += ["--engine", engine, "--backend", "transformers", "--limit", str(n)]
    args += ["--max-new-tokens", str(s["eval_tokens"]), "--batch-size", str(min(n, 32))]
    t = time.perf_counter()
    rc = v2lo(args)
    seconds = time.perf_counter() - t
    done = len(out.read_text().splitlines())
    return {"rc": rc, "questions": done, "questions_per_s": done / seconds, "model": model.name}


def part_eval_hf(work: Path, s: dict, smoke: bool) -> dict:
    return _eval(work, s, "hf")


def part_eval_vllm(work: Path, s: dict, smoke: bool) -> dict:
    return _eval(work, s, "vllm")


def _launch(work: Path, s: dict, config: str, name: str) -> dict:
    cfg = work / f"{name}.json"
    out = work / name
    cfg.write_text(
        json.dumps(
            {
                "data_dir": str(work / "data"),
                "output_dir": str(out),
                "model_source": str(work / "model"),
                "backend": "transformers",
                "mode": "lora",
                "lora_r": s["lora_r"],
                "lora_alpha": s["lora_alpha"],
                "max_steps": s["steps"],
                "save_steps": s["steps"],
                "batch_size": 2,
                "max_frames": 16,
                "gradient_checkpointing": True,
            }
        )
    )
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "configs" / config)]
    cmd += ["--num_processes", "2", "-m", "v2lo_utils.cli", "train", "sft", "--config", str(cfg)]
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"accelerate launch failed: {run.stderr[-600:]}")
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {
        "seconds": round(time.perf_counter() - t, 1),
        "world_size": reports[0]["world_size"],
        "steps": reports[0]["global_step"],
        "ranks_agree": reports[0]["digest"] == reports[1]["digest"],
    }


def part_sft_ddp(work: Path, s: dict, smoke: bool) -> dict:
    return _launch(work, s, "accelerate_ddp.yaml", "sft_ddp")


def part_sft_zero2(work: Path, s: dict, smoke: bool) -> dict:
    return _launch(work, s, "accelerate_deepspeed_zero2.yaml", "sft_zero2")


def run_part(name: str, work: Path, smoke: bool, steps: int) -> dict:
    """One part in this process: {"status": "ok" | "skipped" | "failed", figures or reason}."""
    t = time.perf_counter()
    try:
        _need(**REQUIRES.get(name, {}))
        figures = globals()[f"part_{name}"](work, settings(smoke, steps), smoke)
        out = {"status": "ok", **figures}
    except Skip as why:
        out = {"status": "skipped", "reason": str(why)}
    except Exception as err:  # reported, and the next part still runs
        out = {"status": "failed", "error": f"{type(err).__name__}: {str(err)[-800:]}"}
    return {**out, "wall_s": round(time.perf_counter() - t, 1)}


# ---------------------------------------------------------------------------------------------
# the driver


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version()}
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info |= {"gpu": p.name, "gpus": torch.cuda.device_count(), "gpu_gb": p.total_memory / 2**30}
    for pkg in ("transformers", "trl", "peft", "unsloth", "vllm", "deepspeed"):
        spec = importlib.util.find_spec(pkg)
        info[pkg] = _version(pkg) if spec else None
    return info


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "present"


def run_child(name: str, args, work: Path, start: float) -> dict:
    """One part in a child process, killed at what is left of the time limit."""
    left = args.time_limit - (time.perf_counter() - start)
    if left < 10:
        return {"status": "skipped", "reason": "time limit reached"}
    try:
        _need(**REQUIRES.get(name, {}))
    except Skip as why:  # known here: no child process needed
        return {"status": "skipped", "reason": str(why)}
    cmd = [sys.executable, __file__, "--part", name, "--work", str(work)]
    cmd += ["--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
    t = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=left, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {
            "status": "failed",
            "error": f"killed at the time limit after {time.perf_counter() - t:.0f} s",
        }
    lines = [x for x in run.stdout.splitlines() if x.startswith("{")]
    if run.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {
        "status": "failed",
        "error": f"exit {run.returncode}: {(run.stderr or run.stdout)[-800:]}",
    }


def run_all(args) -> dict:
    """Every part in a child process, each under what is left of the time limit."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "smoke" if args.smoke else "gpu",
        "machine": machine(),
        "time_limit_s": args.time_limit,
        "parts": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.parts or PARTS:
        result["parts"][name] = run_child(name, args, work, start)
        result["total_s"] = round(time.perf_counter() - start, 1)
        out.write_text(json.dumps(result, indent=2))  # after every part: a kill keeps the rest
        print(f"{name}: {result['parts'][name]['status']}", file=sys.stderr, flush=True)
    return result


FIGURES = (
    ("tokens/s", "tokens_per_s", ".0f"),
    ("steps/s", "steps_per_s", ".3f"),
    ("questions/s", "questions_per_s", ".2f"),
    ("peak GB", "peak_gpu_gb", ".1f"),
    ("loss finite", "loss_finite", ""),
    ("parity", "parity_ok", ""),
    ("params B", "parameters_b", ".2f"),
)


def table(result: dict) -> str:
    """The parts as a Markdown table: status, wall time, the figures each measured."""
    lines = ["| part | status | wall s | figures |", "|---|---|---:|---|"]
    for name, r in result["parts"].items():
        figs = [
            f"{label} {format(r[key], spec)}"
            for label, key, spec in FIGURES
            if r.get(key) is not None
        ]
        note = r.get("reason") or r.get("error", "")
        text = "; ".join(figs) or note.replace("\n", " ")[:160]
        lines.append(f"| {name} | {r['status']} | {r.get('wall_s', '-')} | {text} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shape: the script's own test")
    ap.add_argument("--steps", type=int, default=0, help="training steps per part (default 4; 2)")
    ap.add_argument("--time-limit", type=float, default=480.0, help="seconds for all parts")
    ap.add_argument("--parts", nargs="*", choices=PARTS, help="a subset, in this order")
    ap.add_argument("--work", default="", help="work folder (default outputs/bench/gpu[_smoke])")
    ap.add_argument("--out", default="", help="JSON of figures (default <work>.json)")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one part, in a child
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    name = "gpu_smoke" if args.smoke else "gpu"
    args.work = args.work or f"outputs/bench/{name}"
    args.out = args.out or f"{args.work}.json"
    if args.part:
        print(json.dumps(run_part(args.part, Path(args.work), args.smoke, args.steps)))
        return 0
    result = run_all(args)
    print(table(result))
    print(f"\n{args.out}; {result.get('total_s', 0)} s in all")
    failed = [n for n, r in result["parts"].items() if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
