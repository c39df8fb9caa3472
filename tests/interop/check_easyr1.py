"""Run by `make interop EASYR1_DIR=<EasyR1 checkout>` in the interop venv, from the project root,
with the checkout and the project on PYTHONPATH (as `pip install -e` of both would give): EasyR1's
own code on the project's easyr1 export.

1. `verl.utils.dataset.RLHFDataset`, built as EasyR1's `create_dataloader` builds it, with the data
   settings of configs/easyr1_grpo.yaml (prompt_key, answer_key, image_key, image_dir,
   max_prompt_length, format_prompt, min/max pixels, filter_overlong_prompts; truncation "right")
   over a Qwen2.5-VL folder loaded with EasyR1's `get_tokenizer`/`get_processor` (qwen_folder.py).
   No row may be dropped; per row: one <|vision_start|> <|image_pad|> x (grid_h * grid_w / 4)
   <|vision_end|> block per frame, the grids from Qwen's image processor on EasyR1's own
   `process_image` of each frame; the prompt (at most max_prompt_length) equal to its raw prompt
   ids (one pad per frame, what the vLLM rollout gets) with the pads expanded, so not truncated;
   the question text in it; the ground truth the exported answer.
2. The reward as EasyR1 loads it: `RewardConfig(reward_function=<the config's path>)`,
   `post_init`, `AutoRewardManager` (spec_from_file_location of v2lo_utils/easyr1_reward.py), then
   `compute_reward` on a DataProto of tokenised responses (the target, a wrong answer, no map) for
   the first row of each task; the values (reward
   tensor at the last response token, and the per-key metrics) must equal
   v2lo_utils.rewards.compute_score on the same texts.

The config's `data.filter_overlong_prompts_workers` is not set there (EasyR1's default: 16
processes); here the filter runs in one, which changes nothing but the time. EasyR1's PPOConfig
itself is not imported: `verl.workers.config` imports the vLLM rollout, and vLLM is not installed.

Usage: python check_easyr1.py EASYR1_EXPORT.jsonl SWIFT_EXPORT.jsonl --config configs/easyr1_grpo.yaml
  --qwen-dir DIR --chat-template FILE
Prints one line per check; exits 1 on any mismatch."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from qwen_folder import (  # imports nothing heavy at load
    IMAGE_PAD,
    ensure_qwen_folder,
    vision_blocks,
)

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

REWARD_ROWS = 8  # rows (one per task) whose responses the reward manager scores, 3 each


def easyr1_version() -> str:
    """verl's version and the checkout's commit (its folder where it has no git metadata)."""
    import verl

    root = Path(verl.__file__).resolve().parents[1]
    try:
        where = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        where = str(root)
    return f"EasyR1 (verl {verl.__version__}, {where})"


def collapse_pads(ids: list[int]) -> list[int]:
    """The ids with each run of image pads as one (the prompt before the processor expands it)."""
    return [t for k, t in enumerate(ids) if t != IMAGE_PAD or k == 0 or ids[k - 1] != IMAGE_PAD]


def check_dataset(path: str, exported: list[dict], data: dict, tokenizer, processor):
    from verl.utils.dataset import RLHFDataset, process_image

    ds = RLHFDataset(  # the arguments of verl/trainer/data_loader.py:create_dataloader
        data_path=path,
        tokenizer=tokenizer,
        processor=processor,
        prompt_key=data["prompt_key"],
        answer_key=data["answer_key"],
        image_key=data["image_key"],
        image_dir=data["image_dir"],
        max_prompt_length=data["max_prompt_length"],
        truncation="right",
        format_prompt=data["format_prompt"],
        min_pixels=data["min_pixels"],
        max_pixels=data["max_pixels"],
        filter_overlong_prompts=data["filter_overlong_prompts"],
        filter_overlong_prompts_workers=1,
    )
    mismatches = []
    stats = {"frames": 0, "longest": 0}
    j = 0  # the filter keeps the order: walk the export beside the kept rows
    for i in range(len(ds)):
        question = ds.dataset[i][data["prompt_key"]]
        while j < len(exported) and exported[j][data["prompt_key"]] != question:
            frames = len(exported[j][data["image_key"]])
            mismatches.append(f"row {j + 1}: dropped ({frames} frames)")
            j += 1
        want, row = exported[j], f"row {j + 1}"
        j += 1
        item = ds[i]
        frames = want[data["image_key"]]
        images = [process_image(f, data["min_pixels"], data["max_pixels"]) for f in frames]
        grid = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
        expect = [(h * w // 4, True) for _, h, w in grid.tolist()]
        ids = item["input_ids"][item["attention_mask"].bool()].tolist()
        raw = item["raw_prompt_ids"]
        got = vision_blocks(ids)
        if got != expect:
            mismatches.append(f"{row}: vision blocks (pads, closed) {got} != {expect}")
        # raw_prompt_ids (what the vLLM rollout gets) hold one <|image_pad|> per frame
        if collapse_pads(ids) != raw or len(ids) > data["max_prompt_length"]:
            mismatches.append(f"{row}: prompt of {len(ids)} tokens differs from its raw ids")
        text = want[data["prompt_key"]].replace("<image>", "")
        if text not in tokenizer.decode(raw):
            mismatches.append(f"{row}: the question text is not in the prompt")
        if item["ground_truth"] != want[data["answer_key"]]:
            mismatches.append(f"{row}: ground_truth {item['ground_truth']!r}")
        stats["frames"] += len(frames)
        stats["longest"] = max(stats["longest"], len(ids))
    mismatches += [
        f"row {k + 1}: dropped ({len(exported[k][data['image_key']])} frames)"
        for k in range(j, len(exported))
    ]
    return len(ds), mismatches, stats


def responses_for(target: str, answer: str) -> list[str]:
    """The exported target (right), the same with a wrong answer, and one without its map."""
    head, _, _ = target.rpartition("<answer>")
    try:
        wrong = str(float(answer) * 3 + 7)
    except ValueError:  # an option letter
        wrong = "Z" if answer != "Z" else "Y"
    return [target, f"{head}<answer>{wrong}</answer>", target.split("</map>", 1)[-1]]


def check_reward(reward: dict, tokenizer, rows: list[tuple[str, str]]):
    import numpy as np
    import torch
    from verl.protocol import DataProto
    from verl.workers.reward import AutoRewardManager, RewardConfig

    from v2lo_utils.rewards import compute_score

    config = RewardConfig(
        reward_function=reward["reward_function"],
        reward_function_kwargs=dict(reward.get("reward_function_kwargs") or {}),
    )
    config.post_init()  # splits ":compute_score", makes the path absolute (None if missing)
    manager = AutoRewardManager(config, tokenizer)
    texts, truths = [], []
    for target, answer in rows:
        for text in responses_for(target, answer):
            texts.append(text)
            truths.append(answer)
    end = tokenizer.eos_token_id
    ids = [[*tokenizer.encode(t, add_special_tokens=False), end] for t in texts]
    width = max(map(len, ids))
    responses = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for k, row in enumerate(ids):
        responses[k, : len(row)] = torch.tensor(row)
        mask[k, : len(row)] = 1
    batch = DataProto.from_dict(
        tensors={"responses": responses, "response_mask": mask},
        non_tensors={"ground_truth": np.array(truths, dtype=object)},
    )
    reward_tensor, metrics = manager.compute_reward(batch)
    want = compute_score(
        [{"response": t, "ground_truth": g} for t, g in zip(texts, truths, strict=True)],
        **config.reward_function_kwargs,
    )
    mismatches = []
    for k, w in enumerate(want):
        got = {key: metrics[key][k] for key in w}
        last = float(reward_tensor[k, len(ids[k]) - 1])
        if got != w or abs(last - w["overall"]) > 1e-6 or float(reward_tensor[k].sum()) != last:
            mismatches.append(f"response {k + 1}: EasyR1 {got} (tensor {last}), project {w}")
    return len(texts), mismatches, sorted({round(w["overall"], 3) for w in want}), manager


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("easyr1_export")
    ap.add_argument("swift_export", help="the same rows in ms-swift format: the targets")
    ap.add_argument("--config", default="configs/easyr1_grpo.yaml")
    ap.add_argument("--qwen-dir", default="outputs/interop/qwen2_5_vl")
    ap.add_argument("--chat-template", default="outputs/interop/qwen2_5_vl.jinja")
    args = ap.parse_args(argv)
    read = lambda p: [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]  # noqa: E731
    exported, swift_rows = read(args.easyr1_export), read(args.swift_export)
    config = yaml.safe_load(Path(args.config).read_text())

    from verl.utils.tokenizer import get_processor, get_tokenizer

    folder = str(ensure_qwen_folder(args.qwen_dir, swift_rows, args.chat_template))
    data = config["data"]
    kwargs = {"override_chat_template": data.get("override_chat_template"), "use_fast": True}
    tokenizer = get_tokenizer(folder, **kwargs)  # as verl/trainer/main.py loads them
    processor = get_processor(folder, **kwargs)
    easyr1 = easyr1_version()

    try:
        kept, mismatches, stats = check_dataset(
            args.easyr1_export, exported, data, tokenizer, processor
        )
    except Exception as err:  # the client loader's failure is the finding
        print(f"{easyr1} RLHFDataset on {args.easyr1_export}: {type(err).__name__}: {err}")
        return 1
    print(
        f"{easyr1} RLHFDataset ({type(processor).__name__}, {args.config}): {len(exported)} rows, "
        f"{len(exported) - kept} dropped, {stats['frames']} frames, longest prompt "
        f"{stats['longest']} of {data['max_prompt_length']} tokens, {len(mismatches)} mismatches"
    )
    for m in mismatches[:10]:
        print("  " + m)

    targets, tasks = [], set()  # the first row of each task, at most REWARD_ROWS
    for s, e in zip(swift_rows, exported, strict=True):
        if e.get("task") not in tasks and len(targets) < REWARD_ROWS:
            tasks.add(e.get("task"))
            targets.append((s["messages"][1]["content"], e[data["answer_key"]]))
    reward = config["worker"]["reward"]
    try:
        n, reward_mismatches, values, manager = check_reward(reward, tokenizer, targets)
    except (OSError, RuntimeError, AttributeError, ValueError) as err:  # EasyR1's loader errors
        print(f"{easyr1} reward {reward['reward_function']}: {type(err).__name__}: {err}")
        return 1
    print(
        f"{easyr1} reward {manager.config.reward_function}:{manager.config.reward_function_name} "
        f"(AutoRewardManager, reward type {manager.reward_type}): {n} responses of "
        f"{len(targets)} rows, values {values}, {len(reward_mismatches)} mismatches against "
        "v2lo_utils.rewards.compute_score"
    )
    for m in reward_mismatches[:10]:
        print("  " + m)
    return 1 if mismatches or reward_mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
