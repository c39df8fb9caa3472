"""GRPO (rewards see the dataset's columns, resume) and merging (logits parity)."""

import json
from pathlib import Path

import pytest
import torch
from training_helpers import Interrupted, StopAt

from v2lo_utils import grpo as grpo_mod
from v2lo_utils.dataset import Dataset
from v2lo_utils.merge import (
    load_merged,
    logits_on,
    max_logit_diff,
    merge_stage,
    teacher_forced_batch,
)
from v2lo_utils.models import load_model
from v2lo_utils.rewards import compute_score, format_reward, map_reward, placement_reward
from v2lo_utils.training import last_checkpoint


def gparams(tiny_workspace, out, **kw):
    defaults = dict(
        data_dir=str(tiny_workspace / "data"),
        output_dir=str(out),
        model_source="tiny",
        model_cache=str(tiny_workspace / "models"),
        batch_size=4,
        num_generations=4,
        max_steps=1,
        max_completion_length=12,
        max_frames=4,
        lora_r=4,
        lora_alpha=8,
        save_steps=1,
        learning_rate=1e-4,
    )
    return grpo_mod.GRPOParams(**{**defaults, **kw})


def test_rewards_receive_the_columns_and_return_the_core_scores(
    tiny_workspace, tmp_path, monkeypatch
):
    seen = []
    real_setup = grpo_mod.reward_setup

    def spying(map_weight=0.0, map_kind="iou"):
        funcs, weights = real_setup(map_weight, map_kind)

        def wrap(fn):
            def spy(completions, **kwargs):
                out = fn(completions, **kwargs)
                seen.append((fn.__name__, completions, kwargs, out))
                return out

            spy.__name__ = fn.__name__
            return spy

        return [wrap(f) for f in funcs], weights

    monkeypatch.setattr(grpo_mod, "reward_setup", spying)
    p = gparams(tiny_workspace, tmp_path / "g", map_reward_weight=0.2, map_reward_kind="placement")
    grpo_mod.train_grpo(p)
    by_name = {name: (c, kw, out) for name, c, kw, out in seen}
    assert set(by_name) == {"accuracy_by_task", "format_reward", "placement_reward"}
    rows = {r["id"]: r for r in Dataset.load(tiny_workspace / "data").rows["train"]}
    completions, kw, acc = by_name["accuracy_by_task"]
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    for i, row_id in enumerate(kw["id"]):
        row = rows[row_id]
        assert kw["answer"][i] == row["answer"] and kw["task"][i] == row["task"]
        assert json.loads(kw["map"][i]) == row["map"]
    core = compute_score(
        [{"response": t, "ground_truth": a} for t, a in zip(texts, kw["answer"], strict=True)]
    )
    assert acc == [s["accuracy"] for s in core]
    assert by_name["format_reward"][2] == [s["format"] for s in core]
    assert by_name["placement_reward"][2] == placement_reward(completions, map=kw["map"])


def test_reward_setup_adds_the_map_reward_asked_for():
    assert grpo_mod.reward_setup() == ([grpo_mod.accuracy_by_task, format_reward], [0.9, 0.1])
    for kind, fn in (("iou", map_reward), ("placement", placement_reward)):
        funcs, weights = grpo_mod.reward_setup(0.5, kind)
        assert funcs[-1] is fn and weights == [0.9, 0.1, 0.5]
    with pytest.raises(ValueError, match="map_reward_kind 'box'"):
        grpo_mod.reward_setup(0.5, "box")


def test_grpo_resumes_after_an_interruption(tiny_workspace, tmp_path):
    p = gparams(tiny_workspace, tmp_path / "r", max_steps=3)
    with pytest.raises(Interrupted):  # killed during step 2, before its checkpoint
        grpo_mod.train_grpo(p, callbacks=[StopAt(2)])
    assert last_checkpoint(p.output_dir).name == "checkpoint-1"
    result = grpo_mod.train_grpo(p)
    assert result.resumed_from.endswith("checkpoint-1") and result.global_step == 3
    assert sorted(d.name for d in Path(p.output_dir).glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert (result.final_dir / "adapter_model.safetensors").is_file()


def test_merge_parity(tiny_workspace, tmp_path):
    from peft import LoraConfig, get_peft_model

    from v2lo_utils.training import LM_LINEAR_REGEX

    base_dir = tiny_workspace / "models" / "tiny"
    torch.manual_seed(0)
    base = load_model(base_dir)
    adapted = get_peft_model(
        base.model,
        LoraConfig(r=4, lora_alpha=8, target_modules=LM_LINEAR_REGEX, init_lora_weights=False),
    )  # a non-trivial adapter
    adapted.save_pretrained(tmp_path / "adapter")
    base.processor.save_pretrained(tmp_path / "adapter")
    ds = Dataset.load(tiny_workspace / "data")
    rows = ds.rows["train"][:3]
    report = merge_stage(tmp_path / "adapter", tmp_path / "merged", rows, ds.root)
    assert report.merged and report.base == str(base_dir)
    assert report.parity_ok and report.max_abs_logit_diff <= report.tolerance == 1e-4
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    # the check is sensitive: the base model alone is far from the adapter model
    model, processor = load_merged(tmp_path / "merged")
    batch = teacher_forced_batch(processor, rows, ds.root)
    plain = load_model(base_dir).model
    assert (
        max_logit_diff(logits_on(model, batch), logits_on(plain, batch), batch["attention_mask"])
        > 100 * 1e-4
    )
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_grpo_batches_mix_frame_counts(tiny_workspace, tmp_path, monkeypatch):
    """Prompts with 1 and 4 frames in one batch: the loss pass re-tokenises them, and the image
    token types it builds must line up with the image tokens of the (left-padded) prompts."""
    import shutil

    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen

    from v2lo_utils.dataset import read_jsonl, write_jsonl

    real = qwen.Qwen2_5_VLModel.get_rope_index
    checked = []

    def aligned(self, input_ids, mm_token_type_ids, *args, **kwargs):
        assert torch.equal(mm_token_type_ids == 1, input_ids == self.config.image_token_id)
        checked.append(input_ids.shape)
        return real(self, input_ids, mm_token_type_ids, *args, **kwargs)

    monkeypatch.setattr(qwen.Qwen2_5_VLModel, "get_rope_index", aligned)

    data = tmp_path / "data"
    shutil.copytree(tiny_workspace / "data", data)
    rows = read_jsonl(data / "train.jsonl")
    pick = [next(r for r in rows if r["num_frames"] == k) for k in (1, 4)]
    write_jsonl(data / "train.jsonl", pick)
    p = gparams(tiny_workspace, tmp_path / "mix", data_dir=str(data), batch_size=8, max_steps=2)
    assert grpo_mod.train_grpo(p).global_step == 2
    assert checked
