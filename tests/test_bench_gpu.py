"""The GPU benchmark: its 7B shape, and its smoke run on the CPU (so the script cannot rot)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_7b_shape_has_the_published_parameter_count():
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from v2lo_utils.presets import SHAPE_7B, build_tokenizer, corpus, random_model_config

    tokenizer = build_tokenizer(corpus(n_scenes=5), SHAPE_7B.vocab)
    config = random_model_config(SHAPE_7B, tokenizer)
    with torch.device("meta"):  # shapes only, no memory
        model = Qwen2_5_VLForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656  # Qwen2.5-VL-7B-Instruct
    assert config.text_config.vocab_size == 152_064 > len(tokenizer)
    assert config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]


def test_smoke_run_measures_every_cpu_part_and_skips_the_rest(tmp_path):
    work, out = tmp_path / "work", tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--smoke"]
    cmd += ["--work", str(work), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    parts = result["parts"]
    assert list(parts) == list(bench_module().PARTS)
    ok = {n for n, r in parts.items() if r["status"] == "ok"}
    assert ok == {"build", "sft_transformers", "merge", "grpo_hf", "eval_hf"}  # no GPU here
    assert all("CUDA" in r["reason"] for n, r in parts.items() if n not in ok)
    sft = parts["sft_transformers"]
    assert sft["steps"] == 2 and sft["loss_finite"] and sft["tokens_per_s"] > 0
    assert parts["merge"]["parity_ok"] and parts["grpo_hf"]["steps_per_s"] > 0
    assert parts["eval_hf"]["questions"] == 4 and parts["eval_hf"]["rc"] == 0
    config = json.loads((work / "model" / "config.json").read_text())["text_config"]
    assert config["vocab_size"] == 1024 and not config["tie_word_embeddings"]  # padded, untied
    assert "| sft_transformers | ok |" in run.stdout


def test_a_failing_part_is_reported_and_the_table_says_why(tmp_path):
    bench = bench_module()
    result = bench.run_part("merge", tmp_path, smoke=True, steps=0)  # no SFT adapter there
    assert result["status"] == "failed" and "no SFT adapter" in result["error"]
    skipped = bench.run_part("sft_zero2", tmp_path, smoke=True, steps=0)
    assert skipped["status"] == "skipped"
    text = bench.table({"parts": {"merge": result, "sft_zero2": skipped}})
    assert "| merge | failed |" in text and "no SFT adapter" in text
