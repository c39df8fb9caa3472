"""SFT: assistant-only loss, learning, LoRA placement, interruption and resume, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import Interrupted, StopAt

from v2lo_utils.dataset import Dataset
from v2lo_utils.models import load_model
from v2lo_utils.report import steps_sentence
from v2lo_utils.sft import FrameLoadingCollator, SFTParams, sft_rows, train_sft
from v2lo_utils.training import last_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def params(tiny_workspace, out, **kw):
    defaults = dict(
        data_dir=str(tiny_workspace / "data"),
        output_dir=str(out),
        model_source="tiny",
        model_cache=str(tiny_workspace / "models"),
        batch_size=2,
        logging_steps=1,
        max_frames=4,
    )
    return SFTParams(**{**defaults, **kw})


def test_loss_covers_the_assistant_turn_only(tiny_workspace):
    ds = Dataset.load(tiny_workspace / "data")
    rows = sft_rows(ds.rows["train"][:2], ds.root)
    processor = load_model(tiny_workspace / "models" / "tiny").processor
    batch = FrameLoadingCollator(processor)(rows)
    tok = processor.tokenizer
    for i, row in enumerate(rows):
        kept = [t for t in batch["labels"][i].tolist() if t != -100]
        target = row["completion"][0]["content"][0]["text"]
        assert tok.decode(kept).startswith(target)  # the completion (then the end-of-turn tokens)
        assert len(kept) <= len(tok(target + "<|im_end|>\n")["input_ids"])
    assert batch["pixel_values"].shape[0] > 0 and "image_grid_thw" in batch


def test_rows_keep_short_clips_and_a_seeded_fraction_of_long_ones(tiny_workspace):
    ds = Dataset.load(tiny_workspace / "data")
    train = ds.rows["train"]
    longer = [r for r in train if r["num_frames"] > 4]
    assert longer and len(longer) < len(train)

    def frames(rows):
        return sorted(len(r["images"]) for r in rows)

    short = sft_rows(train, ds.root, max_frames=4)
    assert frames(short) == sorted(r["num_frames"] for r in train if r["num_frames"] <= 4)
    half = sft_rows(train, ds.root, max_frames=4, long_fraction=0.5, seed=1)
    assert len(half) == len(short) + round(0.5 * len(longer))
    assert sum(len(r["images"]) > 4 for r in half) == round(0.5 * len(longer))
    assert half == sft_rows(train, ds.root, max_frames=4, long_fraction=0.5, seed=1)  # seeded
    assert len(sft_rows(train, ds.root, max_frames=4, long_fraction=1.0)) == len(train)
    with pytest.raises(ValueError, match="long_fraction"):
        sft_rows(train, ds.root, max_frames=4, long_fraction=1.5)


def test_interrupted_sft_resumes_at_the_right_step(tiny_workspace, tmp_path):
    p = params(tiny_workspace, tmp_path / "run", max_steps=6, save_steps=2)
    with pytest.raises(Interrupted):
        train_sft(p, callbacks=[StopAt(3)])
    assert last_checkpoint(p.output_dir).name == "checkpoint-2"
    result = train_sft(p)
    assert result.resumed_from.endswith("checkpoint-2") and result.global_step == 6
    assert sorted(d.name for d in Path(p.output_dir).glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
    ]
    assert (result.final_dir / "model.safetensors").is_file()
    assert [h["step"] for h in result.log_history if "loss" in h][-1] == 6


def test_full_sft_learns(tiny_workspace, tmp_path):
    p = params(
        tiny_workspace,
        tmp_path / "learn",
        max_steps=40,
        save_steps=100,
        learning_rate=3e-3,
        max_rows=8,
    )
    losses = [h["loss"] for h in train_sft(p).log_history if "loss" in h]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_lora_adapts_the_language_model_only(tiny_workspace, tmp_path):
    p = params(
        tiny_workspace,
        tmp_path / "lora",
        mode="lora",
        max_steps=2,
        save_steps=2,
        lora_r=4,
        lora_alpha=8,
    )
    result = train_sft(p)
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    loaded = load_model(result.final_dir)
    names = [n for n, _ in loaded.model.named_parameters() if "lora_" in n]
    assert (
        names
        and all("language_model" in n for n in names)
        and not any("visual" in n for n in names)
    )
    modules = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names}
    assert modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert result.parameters["trainable"] < result.parameters["total"] / 2


def test_two_process_accelerate_run(tiny_workspace, tmp_path):
    cfg = tmp_path / "sft.json"
    out = tmp_path / "ddp"
    cfg.write_text(
        json.dumps(
            {
                "data_dir": str(tiny_workspace / "data"),
                "output_dir": str(out),
                "model_source": "tiny",
                "model_cache": str(tiny_workspace / "models"),
                "max_steps": 3,
                "save_steps": 3,
                "batch_size": 2,
                "max_frames": 4,
            }
        )
    )
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate_ddp.yaml"),
        "-m",
        "v2lo_utils.cli",
        "train",
        "sft",
        "--config",
        str(cfg),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["global_step"] == 3 for r in reports)
    assert reports[0]["digest"] == reports[1]["digest"]  # identical weights on both ranks
    assert (out / "final" / "model.safetensors").is_file()


def test_sft_config_file_rejects_unknown_settings(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"data_dir": "d", "output_dir": "o", "learning_rat": 1}))
    with pytest.raises(ValueError, match=r"c\.json: unknown setting\(s\) learning_rat"):
        SFTParams.from_file(f)


def test_a_misspelled_notebook_parameter_is_no_silent_default():
    from v2lo_utils.errors import ParameterError

    values = {"data_dir": "d", "learning_rate": 0.5, "eval_rows": 4, "ds": object()}
    assert SFTParams.from_parameters(values, output_dir="o").learning_rate == 0.5
    with pytest.raises(ParameterError, match=r"'learning_rat'.*did you mean 'learning_rate'"):
        SFTParams.from_parameters({**values, "learning_rat": 0.1}, output_dir="o")
    with pytest.raises(ParameterError, match=r"no field 'outdir'"):
        SFTParams.from_parameters(values, outdir="o")


def test_time_budget_stops_and_saves_and_frozen_vision_stays_put(tiny_workspace, tmp_path):
    p = params(
        tiny_workspace,
        tmp_path / "budget",
        max_steps=1000,
        save_steps=1000,
        max_seconds=1e-6,
        freeze_vision=True,
        learning_rate=1e-2,
    )
    result = train_sft(p)
    assert result.stopped_by_budget and 1 <= result.global_step < 1000
    assert last_checkpoint(p.output_dir).name == f"checkpoint-{result.global_step}"
    before = load_model(tiny_workspace / "models" / "tiny").model.state_dict()
    after = load_model(result.final_dir).model.state_dict()
    visual = [k for k in before if "visual" in k]
    assert visual and all((before[k] == after[k]).all() for k in visual)
    language = [k for k in before if "visual" not in k]
    assert any((before[k] != after[k]).any() for k in language)


def test_cooldown_scales_each_optimizer_steps_learning_rate(tmp_path):
    """The cooldown's factor reaches the optimizer at every step (the transformers Trainer calls
    on_pre_optimizer_step with it), on top of the schedule, and bad shares are refused."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from v2lo_utils.errors import ParameterError
    from v2lo_utils.training import learning_rate_factor, time_budget

    assert [learning_rate_factor(x, 0.5) for x in (0.0, 0.5, 0.75, 1.0, 1.2)] == [1, 1, 0.5, 0, 0]
    assert learning_rate_factor(0.99, 0.0) == 1.0
    with pytest.raises(ParameterError, match="cooldown"):
        time_budget(10.0, cooldown=1.5)

    class Line(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            return {"loss": ((self.w(x).squeeze(-1) - labels) ** 2).mean()}

    class Rates(TrainerCallback):
        def __init__(self) -> None:
            self.seen = []

        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.seen.append(optimizer.param_groups[0]["lr"])

    rows = [{"x": torch.ones(2), "labels": torch.tensor(1.0)} for _ in range(40)]
    rates, budget = Rates(), time_budget(0.0, cooldown=0.5)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=10,
        learning_rate=0.1,
        per_device_train_batch_size=2,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=Line(), args=args, train_dataset=rows, callbacks=[budget, rates]).train()
    assert rates.seen == pytest.approx([0.1] * 6 + [0.08, 0.06, 0.04, 0.02])
    assert budget.summary() == {"share": 0.5, "from_step": 7, "last_factor": pytest.approx(0.2)}
    text = steps_sentence(
        "SFT", {"global_step": 10, "train_seconds": 1, "cooldown": budget.summary()}
    )
    assert "falling linearly to 0 over the run's last 50% (from step 7; last factor 0.20)" in text
    assert time_budget(10.0).summary() is None


def lookup_rows(ds, n, seek: bool = False):
    """The first ``n`` training rows with a map, with their lookup targets (and with ``seek``,
    the seek head's), as ``train_sft`` gives them to the collator."""
    from v2lo_utils.exporters import export_rows
    from v2lo_utils.perception import clip_tokens, first_frame_tokens

    chosen = [r for r in ds.rows["train"] if r["map"]][:n]
    rows = export_rows(chosen, "trl-prompt-completion", ds.root)
    for row, tokens in zip(rows, first_frame_tokens(ds, chosen), strict=True):
        row["lookup"] = json.dumps(tokens)
    if seek:
        for row, tokens in zip(rows, clip_tokens(ds, chosen), strict=True):
            row["seek"] = json.dumps(tokens)
    return rows


def test_lookup_targets_are_the_tokens_showing_each_map_object_in_the_first_frame(tiny_workspace):
    from v2lo_utils.perception import first_frame_tokens

    ds = Dataset.load(tiny_workspace / "data")
    rows = [r for r in ds.rows["train"] if r["map"]]
    counts = {"shown": 0, "hidden": 0}
    for row, objects in zip(rows, first_frame_tokens(ds, rows), strict=True):
        assert len(objects) == len(row["map"])
        for tokens, pixels in zip(objects, row["visibility"], strict=True):
            first = pixels[0]  # the build's count of the object's pixels in the first frame
            assert set(tokens) <= set(range(4))  # 56 px: 2 x 2 merged tokens
            if tokens:  # each listed token holds at least 5% of its 28 x 28 px
                assert first >= 0.05 * 28 * 28 * len(tokens)
                counts["shown"] += 1
            elif first >= 4 * 0.05 * 28 * 28:  # then some token must hold 5%
                pytest.fail(f"{row['id']}: {first} px in the first frame, no token")
            if first == 0:
                assert tokens == []
                counts["hidden"] += 1
    assert counts["shown"] > 20 and counts["hidden"] > 0


def assert_mass_is_eager_attention(model, batch, target, head) -> None:
    """``lookup_mass`` of ``head`` (layer, head) on ``target`` (rows, queries, keys), from the
    layer's captured input, equals the eager kernel's attention weights summed over the keys."""
    import torch

    from v2lo_utils.perception import _eager_attention, lookup_attention, lookup_mass

    seen = {}

    def capture(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["rope"] = kwargs["position_embeddings"]

    layer = lookup_attention(model, head[0])
    hook = layer.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.no_grad(), _eager_attention(model):
        out = model(**batch, output_attentions=True)
    hook.remove()
    weights = out.attentions[head[0]]
    weights = weights[:, head[1] % weights.shape[1]]  # as lookup_mass: negative from the end
    expected = torch.stack([weights[j, q][k].sum() for j, q, k in zip(*target, strict=True)])
    mask = batch["attention_mask"]
    with torch.no_grad():
        got = lookup_mass(layer, seen["hidden"], seen["rope"], mask, *target, head=head[1])
    assert torch.allclose(got, expected, atol=1e-5)


def head_batch(tiny_workspace, head: str, seek: bool = False, **collator):
    """The tiny preset, 8 rows with first-frame lookup targets (and the seek head's), their
    collated batch and ``head``'s targets (rows, queries, keys) popped from it, the other
    heads' removed."""
    ds = Dataset.load(tiny_workspace / "data")
    rows = lookup_rows(ds, 8, seek)
    loaded = load_model(str(tiny_workspace / "models" / "tiny"))
    batch = FrameLoadingCollator(loaded.processor, **collator)(rows)
    fields = ("rows", "queries", "keys")
    target = [batch.pop(f"{head}_{f}") for f in fields]
    for name in ("lookup", "copy", "number", "option", "frame", "seek"):
        for f in fields:
            batch.pop(f"{name}_{f}", None)
    return loaded, rows, batch, target


def test_lookup_mass_is_the_lookup_heads_attention_on_the_first_frames_object(tiny_workspace):
    from v2lo_utils.perception import LOOKUP_COORDS, LOOKUP_HEAD
    from v2lo_utils.presets import COORD_TOKENS, entry_tokens

    loaded, _, batch, target = head_batch(tiny_workspace, "lookup")
    assert len(target[0]) > 0
    tok, image_id = loaded.processor.tokenizer, loaded.model.config.image_token_id
    entries = set(tok.convert_tokens_to_ids(list(entry_tokens())))
    coords = set(tok.convert_tokens_to_ids(list(COORD_TOKENS)))
    queries: dict = {}
    for j, q, keys in zip(*target, strict=True):
        ids, labels = batch["input_ids"][j].tolist(), batch["labels"][j].tolist()
        assert labels[q + 1] in coords  # each query writes one of the entry's coordinates
        first = [p for p, t in enumerate(ids) if t == image_id][:4]
        assert set(keys.nonzero().flatten().tolist()) <= set(first)
        queries.setdefault(int(j), []).append((int(q), keys.nonzero().flatten().tolist()))
    for j, found in queries.items():
        ids, labels = batch["input_ids"][j].tolist(), batch["labels"][j].tolist()
        k = LOOKUP_COORDS  # per entry: its opening, then the positions writing its next k - 1
        assert len(found) % k == 0
        for n in range(0, len(found), k):
            entry = found[n : n + k]
            q = entry[0][0]
            assert ids[q] in entries  # the map entry's opening writes the object's first coordinate
            after = [p - 1 for p, t in enumerate(labels) if t in coords and p > q + 1][: k - 1]
            assert [p for p, _ in entry] == [q, *after]
            assert all(keys == entry[0][1] for _, keys in entry)  # one object for all
    assert_mass_is_eager_attention(loaded.model, batch, target, LOOKUP_HEAD)


def test_seek_targets_are_each_map_objects_tokens_in_every_frame(tiny_workspace):
    """The seek head's keys are the image tokens showing the entry's object in any frame of the
    row: the lookup's first-frame tokens among them, and objects the first frame does not show
    get targets too, in a later frame's tokens; its queries are the lookup's."""
    from v2lo_utils.perception import SEEK_HEAD, clip_tokens, first_frame_tokens

    ds = Dataset.load(tiny_workspace / "data")
    rows = [r for r in ds.rows["train"] if r["map"]]
    later = 0
    pairs = zip(rows, clip_tokens(ds, rows), first_frame_tokens(ds, rows), strict=True)
    for row, every, first in pairs:
        n = len(row["frame_indices"])
        for tokens, head, pixels in zip(every, first, row["visibility"], strict=True):
            assert [t for t in tokens if t < 4] == head  # 56 px: 4 merged tokens a frame
            assert set(tokens) <= set(range(4 * n))
            for f in range(n):  # a frame's tokens only where the build counted the object's pixels
                if any(4 * f <= t < 4 * f + 4 for t in tokens):
                    assert pixels[f] >= 0.05 * 28 * 28
            later += bool(tokens) and not head
    assert later > 0
    _, _, _, target = head_batch(tiny_workspace, "lookup")
    loaded, _, batch, seek = head_batch(tiny_workspace, "seek", seek=True)
    image_id = loaded.model.config.image_token_id
    lookup = set(zip(target[0].tolist(), target[1].tolist(), strict=True))
    queries = set(zip(seek[0].tolist(), seek[1].tolist(), strict=True))
    assert lookup <= queries  # and the entries only later frames show
    for j, _q, keys in zip(*seek, strict=True):
        ids = batch["input_ids"][j].tolist()
        image = [p for p, t in enumerate(ids) if t == image_id]
        assert set(keys.nonzero().flatten().tolist()) <= set(image)
    assert_mass_is_eager_attention(loaded.model, batch, seek, SEEK_HEAD)


def test_frame_targets_are_the_earlier_frames_or_the_first_token(tiny_workspace):
    """The frame head's queries are image tokens of every frame; a first frame's attend to the
    sequence's first token, a later frame's to all the image tokens before their frame."""
    from v2lo_utils.perception import FRAME_HEAD, FRAME_QUERIES

    loaded, rows, batch, target = head_batch(tiny_workspace, "frame", frames=True)
    image_id = loaded.model.config.image_token_id
    seen: dict = {}
    for j, q, keys in zip(*target, strict=True):
        ids = batch["input_ids"][j].tolist()
        image = [p for p, t in enumerate(ids) if t == image_id]
        f = image.index(int(q)) // 4  # 56 px: 4 merged tokens a frame
        expected = image[: 4 * f] if f else [0]
        assert keys.nonzero().flatten().tolist() == expected
        seen.setdefault(int(j), []).append(f)
    for j, row in enumerate(rows):  # every frame of every row, FRAME_QUERIES tokens each
        n = len(row["images"])
        assert sorted(seen[j]) == sorted(list(range(n)) * min(FRAME_QUERIES, 4))
    assert any(len(r["images"]) > 1 for r in rows)
    assert_mass_is_eager_attention(loaded.model, batch, target, FRAME_HEAD)


def test_copy_targets_are_the_questions_words_for_each_map_entry(tiny_workspace):
    from v2lo_utils.perception import COPY_HEAD
    from v2lo_utils.presets import category_tokens, entry_tokens

    loaded, rows, batch, target = head_batch(tiny_workspace, "copy", copy=True)
    tok = loaded.processor.tokenizer
    name_of = dict(zip(entry_tokens(), category_tokens(), strict=True))
    entries = 0
    for j in range(len(rows)):  # every entry whose object the prompt names has a target
        labels = batch["labels"][j].tolist()
        start = next(p for p, t in enumerate(labels) if t != -100)
        prompt = tok.convert_ids_to_tokens(batch["input_ids"][j][:start].tolist())
        written = tok.convert_ids_to_tokens([t for t in labels if t != -100])
        entries += sum(1 for t in written if t in name_of and name_of[t] in prompt)
    assert len(target[0]) == entries > 8
    for j, q, keys in zip(*target, strict=True):
        ids, labels = batch["input_ids"][j].tolist(), batch["labels"][j].tolist()
        entry = tok.convert_ids_to_tokens(ids[q + 1])  # the position predicting the entry
        assert labels[q + 1] == ids[q + 1] and entry in name_of
        named = keys.nonzero().flatten().tolist()
        assert named and all(labels[p] == -100 for p in named)  # in the prompt
        assert {tok.convert_ids_to_tokens(ids[p]) for p in named} == {name_of[entry]}
        assert ids.count(tok.convert_tokens_to_ids(name_of[entry])) >= len(named)
    assert_mass_is_eager_attention(loaded.model, batch, target, COPY_HEAD)


def test_number_targets_are_the_maps_copies_of_each_think_coordinate(tiny_workspace):
    from v2lo_utils.perception import NUMBER_HEAD
    from v2lo_utils.presets import COORD_TOKENS

    loaded, rows, batch, target = head_batch(tiny_workspace, "number", numbers=True)
    tok = loaded.processor.tokenizer
    coords = set(COORD_TOKENS)
    expected = []
    for j in range(len(rows)):  # from the text: the think's coordinates that the map holds
        labels = batch["labels"][j].tolist()
        written = [(p, tok.convert_ids_to_tokens(t)) for p, t in enumerate(labels) if t != -100]
        text = "".join(tok.convert_tokens_to_string([t]) for _, t in written)
        cut = text.index("</map>")
        chars, end = 0, None
        for k, (_, t) in enumerate(written):
            chars += len(tok.convert_tokens_to_string([t]))
            if end is None and chars > cut:
                end = k
        in_map = {t for _, t in written[:end] if t in coords}
        expected += [(j, p - 1) for p, t in written[end + 1 :] if t in coords and t in in_map]
    got = list(zip(target[0].tolist(), target[1].tolist(), strict=True))
    assert got == expected and len(got) > 8
    for j, q, keys in zip(*target, strict=True):
        ids, labels = batch["input_ids"][j].tolist(), batch["labels"][j].tolist()
        held = keys.nonzero().flatten().tolist()
        assert held and {ids[p] for p in held} == {ids[q + 1]}  # the same coordinate ...
        close = next(p for p, t in enumerate(labels) if t != -100 and "</" in tok.decode([t]))
        assert all(labels[p] != -100 and p < close for p in held)  # ... in the map
    assert_mass_is_eager_attention(loaded.model, batch, target, NUMBER_HEAD)


def test_option_targets_are_the_text_of_the_option_each_letter_names(tiny_workspace):
    from v2lo_utils.perception import OPTION_HEAD

    loaded, rows, batch, target = head_batch(tiny_workspace, "option", options=True)
    chosen = [r for r in Dataset.load(tiny_workspace / "data").rows["train"] if r["map"]][:8]
    tok = loaded.processor.tokenizer
    found = {j: 0 for j in range(len(rows))}
    for j, q, keys in zip(*target, strict=True):
        ids, labels = batch["input_ids"][j].tolist(), batch["labels"][j].tolist()
        # the position predicting the letter (token "D", " D" or ">D") ...
        letter = tok.decode([labels[q + 1]])[-1]
        assert letter == chosen[j]["answer"], tok.decode([t for t in labels if t != -100])
        assert "</map>" in tok.decode([t for t in labels[: q + 1] if t != -100])
        text = tok.decode([ids[p] for p in keys.nonzero().flatten().tolist()])
        assert f"{letter}.{text}" in chosen[j]["options"]  # ... and the prompt's option text
        assert all(labels[p] == -100 for p in keys.nonzero().flatten().tolist())
        found[int(j)] += 1
    lettered = [j for j, r in enumerate(chosen) if r["answer"] in "ABCD"]
    assert lettered and all(found[j] == 2 for j in lettered)  # the think's "option X" and answer
    assert all(found[j] == 0 for j in found if j not in lettered)
    assert_mass_is_eager_attention(loaded.model, batch, target, OPTION_HEAD)


def test_sft_with_the_head_losses_trains_and_logs_them(tiny_workspace, tmp_path):
    kw = dict(max_steps=3, save_steps=100, max_rows=8, lookup_weight=1.0, copy_weight=0.5)
    kw |= {"number_weight": 0.25, "option_weight": 0.75, "frame_weight": 0.5, "seek_weight": 2.0}
    kw |= {"regression_weight": 0.1}
    p = params(tiny_workspace, tmp_path / "lookup", **kw)
    result = train_sft(p)
    text = steps_sentence("after SFT", result.to_json())
    for key, weight, said in (
        ("lookup", 1.0, "lookup loss (weight 1: -log"),
        ("copy", 0.5, "copy loss (weight 0.5: -log"),
        ("number", 0.25, "number loss (weight 0.25: -log"),
        ("option", 0.75, "option loss (weight 0.75: -log"),
        ("frame", 0.5, "frame loss (weight 0.5: -log"),
        ("seek", 2.0, "seek loss (weight 2: -log"),
        ("regression", 0.1, "coordinate regression loss (weight 0.1: squared error"),
    ):
        logged = [h[f"{key}_loss"] for h in result.log_history if f"{key}_loss" in h]
        # every batch has map entries and think coordinates; not every one a lettered answer
        assert len(logged) == 3 or (key == "option" and len(logged) >= 1), (key, logged)
        assert all(0 < v < 20 for v in logged)
        assert getattr(result, key) == {"weight": weight, "first": logged[0], "last": logged[-1]}
        assert said in text and f"{logged[-1]:.2f}" in text


def test_coordinate_regression_is_the_squared_error_of_the_mean_coordinate():
    import torch

    from v2lo_utils.sft import coordinate_regression

    ids, values = torch.tensor([5, 6, 7]), torch.tensor([-1.0, 0.0, 1.0])
    labels = torch.tensor([[-100, 7, 3, 5]])  # coordinates at positions 1 (1.0 m) and 3 (-1.0 m)
    logits = torch.zeros(1, 4, 10)
    logits[0, 0, 7] = 50.0  # position 0 predicts position 1's 1.0 m: no error
    # position 2 predicts position 3's -1.0 m uniformly over the three values: mean 0, error 1
    eye = torch.eye(10)  # hidden states = logits
    assert coordinate_regression(logits, labels, eye, ids, values).item() == pytest.approx(0.5)
    near, far = logits.clone(), logits.clone()
    near[0, 2, 6], far[0, 2, 7] = 50.0, 50.0  # a confident 0.0 m and a confident 1.0 m
    # cross-entropy charges both alike; the regression loss charges the near miss less
    assert coordinate_regression(near, labels, eye, ids, values).item() == pytest.approx(0.5)
    assert coordinate_regression(far, labels, eye, ids, values).item() == pytest.approx(2.0)
    # only the mean counts: half the mass at -1 m and half at 1 m cost what a confident 0 m does
    mixed = logits.clone()
    mixed[0, 2, 5] = mixed[0, 2, 7] = 50.0
    assert coordinate_regression(mixed, labels, eye, ids, values).item() == pytest.approx(0.5)
    assert coordinate_regression(logits, torch.tensor([[-100, 3, 3, 3]]), eye, ids, values) is None
