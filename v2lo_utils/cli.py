"""The ``v2lo`` command line.

v2lo parse [FILE] [--answer GT]   split a completion into map/think/answer (JSON), with rewards
v2lo demo [--seed S]              one question of every task over a random layout, with targets
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Sequence

from . import __version__


def _read(path: str) -> str:
    from .errors import DataError

    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte {err.start + 1})") from err


def cmd_parse(args: argparse.Namespace) -> int:
    from .cogmap import parse_response
    from .rewards import paper_score

    text = _read(args.file)
    r = parse_response(text)
    out = {
        "format_ok": r.format_ok,
        "map": r.cogmap.to_json() if r.cogmap is not None else None,
        "map_error": r.map_error,
        "think": r.think,
        "answer": r.answer,
    }
    if args.answer is not None:
        out["reward"] = paper_score(text, args.answer)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .layout import random_scene_map
    from .questions import TASKS, generate_question, make_target, solve
    from .rewards import compute_score
    from .scoring import score_answer

    rng = random.Random(args.seed)
    scene = random_scene_map(rng, args.objects)
    print(f"Scene (seed {args.seed}): {len(scene)} objects: {', '.join(scene.names())}\n")
    for task in TASKS:
        q = generate_question(task, scene, rng)
        if q is None:
            print(f"[{task}] no well-posed question in this scene\n")
            continue
        target = make_target(q, scene)
        reward = compute_score([{"response": target, "ground_truth": q.answer}])[0]
        bench = score_answer(task, target, q.answer)
        if solve(q.task, q.params, scene) != q.answer:
            raise RuntimeError(f"{task}: solve disagrees with the stored answer")
        print(f"[{task}] {q.prompt()}\n  answer: {q.answer}\n  target: {target}")
        print(f"  paper reward {reward['overall']:.2f}, benchmark score {bench.score:.2f}\n")
    return 0


def _build_config(args: argparse.Namespace, **extra):
    from .dataset import BuildConfig

    return BuildConfig(seed=args.seed, image_size=args.image_size, workers=args.workers, **extra)


def cmd_data_build(args: argparse.Namespace) -> int:
    from .dataset import build_training_set

    cfg = _build_config(
        args, scenes=args.scenes, clips_per_scene=args.clips, val_fraction=args.val_fraction
    )
    counts = build_training_set(args.out, cfg)
    print(f"{args.out}: {counts['train']} train rows, {counts['val']} val rows")
    return 0


def cmd_data_qvs(args: argparse.Namespace) -> int:
    from .dataset import build_qvs_bench

    n = build_qvs_bench(args.out, _build_config(args, questions=args.questions))
    print(f"{args.out}/qvs_bench.jsonl: {n} questions")
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .dataset import Dataset, write_jsonl
    from .errors import DataError
    from .exporters import export_rows

    ds = Dataset.load(args.data)
    if args.split not in ds.rows:
        raise DataError(f"{args.data}: has no split {args.split!r} (has {', '.join(ds.rows)})")
    out = Path(args.out)
    rel = out.parent if args.relative else None
    source = ds.root / ("qvs_bench.jsonl" if args.split == "qvs" else f"{args.split}.jsonl")
    rows = export_rows(
        ds.rows[args.split], args.format, ds.root, grid=args.grid, relative_to=rel, source=source
    )
    print(f"{out}: {write_jsonl(out, rows)} {args.format} rows")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RunError, parse_overrides, run_profile

    only = [s for item in args.only or [] for s in item.split(",") if s]
    try:
        result = run_profile(
            args.profile, only=only, overrides=parse_overrides(args.param or []), run_id=args.run_id
        )
    except RunError as err:
        print(f"v2lo run: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        why = str(err) or "Ctrl-C"
        print(f"v2lo run: interrupted ({why}); run.json lists the finished steps", file=sys.stderr)
        return 130
    print(f"run finished: {result.run_dir} ({', '.join(result.notebooks)})")
    return 0


def cmd_train_sft(args: argparse.Namespace) -> int:
    import json

    from .sft import SFTParams, train_sft

    result = train_sft(SFTParams.from_file(args.config))
    print(json.dumps({k: v for k, v in result.to_json().items() if k != "log_history"}, indent=2))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from .benchmark import SUMMARY_FIELDS, format_table
    from .errors import PredictionsError
    from .evaluation import score_file
    from .loaders import load_benchmark

    rows = load_benchmark(args.benchmark)
    if not os.path.isfile(args.predictions):
        raise PredictionsError(f"{args.predictions}: no such predictions file")
    fmt = None if args.format == "auto" else args.format
    summary = score_file(rows, args.predictions, args.bootstrap, args.force, fmt=fmt)
    print(format_table(summary))
    if args.json:
        out = {k: summary[k] for k in SUMMARY_FIELDS}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .benchmark import format_table, subset
    from .evaluation import evaluate_benchmark
    from .loaders import check_frames, load_benchmark
    from .models import check_model_folder, load_model, model_fingerprint

    rows = load_benchmark(args.benchmark)
    bench_file = Path(args.benchmark)
    root = bench_file if bench_file.is_dir() else bench_file.parent
    rows = subset(rows, args.limit)
    check_frames(rows, root, bench_file)
    settings = {
        "model": str(Path(args.model).resolve()) if os.path.isdir(args.model) else args.model,
        "engine": args.engine,
        "image_size": _image_size(root),
    }
    if args.engine == "vllm":
        from .generation import generate_vllm, vllm_engine
        from .models import load_processor

        settings["weights"] = model_fingerprint(check_model_folder(args.model))
        llm, processor = vllm_engine(args.model), load_processor(args.model)

        def generate(batch):
            return generate_vllm(llm, processor, batch, root, args.max_new_tokens)

        model = None
    else:
        loaded = load_model(args.model, args.backend)
        model, processor, generate = loaded.model, loaded.processor, None
        settings.update(weights=model_fingerprint(loaded.path), backend=loaded.backend)
    summary = evaluate_benchmark(
        model,
        processor,
        rows,
        root,
        args.out,
        args.max_new_tokens,
        args.batch_size,
        generate=generate,
        settings=settings,
        force=args.force,
    )
    print(format_table(summary))
    return 0


def _image_size(root) -> int | None:
    """The frame size a benchmark folder's manifest states, or None."""
    try:
        with open(os.path.join(root, "manifest.json"), encoding="utf-8") as fh:
            return json.load(fh)["config"]["image_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_parser() -> argparse.ArgumentParser:
    from .exporters import FORMATS
    from .harnesses import FORMATS as PREDICTION_FORMATS

    p = argparse.ArgumentParser(prog="v2lo", description="Video2Layout workbook")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("run", help="execute the numbered notebooks of a profile with papermill")
    sp.add_argument("--profile", default="demo", help="smoke, demo or paper (profiles.toml)")
    sp.add_argument("--only", action="append", help="notebook numbers or stems, e.g. 01,02")
    sp.add_argument(
        "-p", "--param", action="append", metavar="KEY=VALUE", help="override a parameter"
    )
    sp.add_argument(
        "--run-id", help="run folder name under outputs/runs (default: time and profile)"
    )
    sp.set_defaults(func=cmd_run)

    data = sub.add_parser("data", help="build and export datasets").add_subparsers(
        dest="data_command", required=True
    )
    for name, helptext in (("build", "training set"), ("qvs", "QVS-Bench-Sim")):
        sp = data.add_parser(name, help=helptext)
        sp.add_argument("--out", required=True, help="dataset folder")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--image-size", type=int, default=224, help="frame width and height (px)")
        sp.add_argument("--workers", type=int, default=2, help="processes (default: both cores)")
        if name == "build":
            sp.add_argument("--scenes", type=int, required=True)
            sp.add_argument("--clips", type=int, default=1, help="clips per scene")
            sp.add_argument("--val-fraction", type=float, default=0.1)
            sp.set_defaults(func=cmd_data_build)
        else:
            sp.add_argument("--questions", type=int, default=500)
            sp.set_defaults(func=cmd_data_qvs)
    sp = data.add_parser("export", help="rows in ms-swift, EasyR1 or TRL format")
    sp.add_argument("--data", required=True, help="dataset folder")
    sp.add_argument("--format", required=True, choices=list(FORMATS))
    sp.add_argument("--split", default="train", help="train, val or qvs")
    sp.add_argument("--grid", type=int, help="grid-map targets with this grid size instead")
    sp.add_argument("--relative", action="store_true", help="image paths relative to the output")
    sp.add_argument("--out", required=True, help="output .jsonl")
    sp.set_defaults(func=cmd_data_export)

    train = sub.add_parser("train", help="training stages (for accelerate launch)").add_subparsers(
        dest="train_command", required=True
    )
    sp = train.add_parser("sft", help="supervised fine-tuning from a JSON config")
    sp.add_argument("--config", required=True, help="JSON file of SFTParams fields")
    sp.set_defaults(func=cmd_train_sft)

    sp = sub.add_parser("score", help="score a predictions JSONL against a benchmark")
    sp.add_argument(
        "--benchmark", required=True, help="folder with qvs_bench.jsonl, or a QVS/VSI file"
    )
    sp.add_argument(
        "--predictions",
        required=True,
        help='JSONL of {"id", "completion"}, lmms-eval samples or a VLMEvalKit table',
    )
    sp.add_argument("--json", help="write the summary here")
    sp.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    sp.add_argument("--force", action="store_true", help="score predictions of other rows too")
    sp.add_argument(
        "--format",
        choices=("auto", *PREDICTION_FORMATS),
        default="auto",
        help="predictions layout: this project's JSONL, lmms-eval --log_samples JSONL, or a "
        "VLMEvalKit table (.xlsx/.tsv/.json); auto detects it",
    )
    sp.set_defaults(func=cmd_score)

    sp = sub.add_parser("eval", help="generate and score a model on a benchmark (resumable)")
    sp.add_argument("--benchmark", required=True, help="folder with qvs_bench.jsonl")
    sp.add_argument("--model", required=True, help="model folder or preset")
    sp.add_argument("--out", required=True, help="predictions JSONL (appended; resumes)")
    sp.add_argument("--backend", default="auto")
    sp.add_argument(
        "--engine",
        choices=("hf", "vllm"),
        default="hf",
        help="generation: transformers (hf), or vLLM on a GPU (a merged model folder)",
    )
    sp.add_argument("--max-new-tokens", type=int, default=512)
    sp.add_argument("--batch-size", type=int, default=4)
    sp.add_argument(
        "--limit",
        type=int,
        default=0,
        help="N questions with the benchmark's task x frame-count shares",
    )
    sp.add_argument("--force", action="store_true", help="resume despite other settings")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("parse", help="parse a completion into map, think and answer (JSON)")
    sp.add_argument("file", nargs="?", default="-", help="completion text file (default: stdin)")
    sp.add_argument("--answer", help="ground truth: also print the paper's reward")
    sp.set_defaults(func=cmd_parse)

    sp = sub.add_parser("demo", help="one question of every task over a random layout")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--objects", type=int, default=10)
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A V2loError (bad data, model folder, predictions or parameters) is printed
    as one line, ``v2lo <command>: <where>: <what>``, with exit status 2; ``--debug`` shows the
    traceback instead."""
    from .errors import V2loError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except V2loError as err:
        if args.debug:
            raise
        name = " ".join(
            x for x in (args.command, getattr(args, "data_command", None)) if isinstance(x, str)
        )
        print(f"v2lo {name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
