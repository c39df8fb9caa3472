"""The offline tiny Qwen2.5-VL, model folders, backends and LoRA placement."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from v2lo_utils.models import ModelFolderError, check_model_folder, load_model, pick_backend
from v2lo_utils.presets import COORD_TOKENS, chat_template, coordinate_features, create_preset


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return create_preset("tiny", tmp_path_factory.mktemp("models") / "tiny")


def test_preset_reloads_offline_and_runs(tiny):
    code = f"""
import torch
from PIL import Image
from v2lo_utils.models import load_model
m = load_model({str(tiny)!r})
msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "image"}}, {{"type": "text", "text": "map?"}}]}}]
text = m.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
imgs = [Image.new("RGB", (112, 112), (200, 10, 10))] * 2
batch = m.processor(images=imgs, text=[text], return_tensors="pt")
out = m.model(**batch)
assert out.logits.shape[-1] == len(m.processor.tokenizer), out.logits.shape
assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]], batch["image_grid_thw"]  # 56 px
print("ok", m.backend, m.device)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok transformers cpu" in out.stdout


def test_tokenizer_and_template(tiny):
    m = load_model(tiny)
    tok = m.processor.tokenizer
    for c in ("-2.5", "0.0", "7.9", "-8.0"):
        assert tok.tokenize(c) == [c]  # one token per coordinate
    for name in ("armchair", "sidetable", "box", "dogbed"):
        assert tok.tokenize(name) == [name]  # and per category name
    assert set(COORD_TOKENS) <= set(tok.get_vocab())
    assert m.processor.chat_template == chat_template()
    assert type(m.processor).get_attributes() == ["image_processor", "tokenizer"]
    text = '<map>[{"object_name": "sofa", "bbox": [-2.0, 1.6, -1.1, 3.7]}]</map>'
    assert tok.decode(tok(text)["input_ids"]) == text
    # the map entry's opening, name included, is one token (the lookup's query position)
    assert '{"object_name": "sofa", "bbox": [' in tok.tokenize(text)
    assert json.loads((tiny / "v2lo_preset.json").read_text())["preset"] == "tiny"


def test_preset_loads_with_the_standard_auto_classes(tiny):
    """The saved tokenizer is a Qwen2Tokenizer that tokenises as the one it was built from (Qwen2's
    own text pipeline), and the processor files name the stock Qwen2.5-VL processor, with the
    image settings where transformers 4 reads them."""
    from transformers import AutoTokenizer

    from v2lo_utils.presets import build_tokenizer, corpus

    built = build_tokenizer(corpus(seed=0), 400)  # the tiny preset's vocabulary, seed 0
    loaded = AutoTokenizer.from_pretrained(tiny)
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    texts = [*corpus(n_scenes=20, seed=5), "Ünïcödé ½ 12.75 m, x ≈ −3.4\n\nok", "  two  spaces"]
    differ = [t for t in texts if built(t)["input_ids"] != loaded(t)["input_ids"]]
    assert not differ, differ[:2]
    tok_cfg = json.loads((tiny / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "Qwen2Tokenizer"
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        assert json.loads((tiny / name).read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    image = json.loads((tiny / "preprocessor_config.json").read_text())
    assert image["image_processor_type"] == "Qwen2VLImageProcessor"
    assert image["min_pixels"] == image["max_pixels"] == 56 * 56


def test_coordinate_embeddings_are_smooth_in_the_value(tiny):
    import torch

    values = [float(c) for c in COORD_TOKENS]
    feats = torch.nn.functional.normalize(coordinate_features(values, 32), dim=1)
    sim = feats @ feats.T
    i = values.index(0.0)
    near, far = sim[i, i + 1], sim[i, i + 30]  # 0.1 m and 3 m apart
    assert near > 0.9 and far < 0.6, (near, far)
    # the preset's tied rows carry that structure: neighbours closer than distant values
    m = load_model(tiny)
    ids = m.processor.tokenizer.convert_tokens_to_ids(["0.0", "0.1", "3.0"])
    emb = torch.nn.functional.normalize(m.model.get_input_embeddings().weight[ids], dim=1)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_backend_choice_on_cpu():
    assert pick_backend("auto") == "transformers"
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        pick_backend("unsloth")
    with pytest.raises(ValueError, match="unknown backend"):
        pick_backend("vllm")


def test_bad_model_folders_name_path_and_what_is_missing(tmp_path, tiny):
    with pytest.raises(ModelFolderError, match=r"nope: no such model folder"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFolderError, match=r"file: not a folder"):
        check_model_folder(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFolderError, match=r"empty: missing config\.json"):
        load_model(empty)
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match=r"broken/config\.json: not a valid JSON config"):
        check_model_folder(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelFolderError, match=r"model_type is 'llama'"):
        check_model_folder(broken)
    shutil.copy(tiny / "config.json", broken / "config.json")
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"broken: missing weights"):
        check_model_folder(broken)
    shutil.copy(tiny / "model.safetensors", broken / "model.safetensors")
    (broken / "tokenizer.json").unlink()
    (broken / "tokenizer_config.json").unlink()
    with pytest.raises(ModelFolderError, match=r"broken: missing tokenizer"):
        check_model_folder(broken)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(
        ModelFolderError, match=r"adapter_config\.json: missing base_model_name_or_path"
    ):
        load_model(adapter)


def test_cached_presets_of_another_recipe_are_rebuilt(tmp_path):
    from v2lo_utils.models import resolve_source
    from v2lo_utils.presets import PRESET_FILE, PRESET_VERSION

    folder = resolve_source("tiny", tmp_path)
    doc = json.loads((folder / PRESET_FILE).read_text())
    assert doc["version"] == PRESET_VERSION
    (folder / PRESET_FILE).write_text(json.dumps({**doc, "version": PRESET_VERSION - 1}))
    (folder / "stale.txt").write_text("from the old recipe")
    assert resolve_source("tiny", tmp_path) == folder
    assert not (folder / "stale.txt").exists()
    assert json.loads((folder / PRESET_FILE).read_text())["version"] == PRESET_VERSION


def test_a_cached_preset_of_another_build_budget_is_rebuilt_only_when_one_is_asked(tmp_path):
    from v2lo_utils.models import resolve_source
    from v2lo_utils.presets import PRESET_FILE, preset_budget

    folder = resolve_source("tiny", tmp_path)
    assert preset_budget(folder) == 0.0
    (folder / "mark.txt").write_text("this build")
    assert resolve_source("tiny", tmp_path, preset_seconds=None) == folder  # any cached build
    assert resolve_source("tiny", tmp_path, preset_seconds=0.0) == folder  # the same budget
    assert (folder / "mark.txt").exists()
    assert resolve_source("tiny", tmp_path, preset_seconds=30.0) == folder
    assert not (folder / "mark.txt").exists()
    assert json.loads((folder / PRESET_FILE).read_text())["max_seconds"] == 30.0


def test_greedy_coordinates_decode_at_the_mean_of_their_distribution(tiny):
    import torch

    from v2lo_utils.generation import coordinate_mean_processor, coordinate_token_values

    tok = load_model(tiny).processor.tokenizer
    values = coordinate_token_values(tok)
    assert len(values) == len(COORD_TOKENS) and sorted(values.values())[0] == -8.0
    proc = coordinate_mean_processor(tok)
    ids = {c: tok.convert_tokens_to_ids(c) for c in ("1.0", "3.0", "3.1", "2.2")}
    word = tok.convert_tokens_to_ids("sofa")
    scores = torch.full((2, len(tok)), -30.0)
    for c, p in (("1.0", 0.4), ("3.0", 0.35), ("3.1", 0.25)):
        scores[0, ids[c]] = scores[1, ids[c]] = float(torch.log(torch.tensor(p)))
    scores[1, word] = 5.0  # a word is most likely here: this row is left alone
    before = scores[1].clone()
    out = proc(None, scores)
    assert out[0].argmax() == ids["2.2"]  # 0.4 * 1.0 + 0.35 * 3.0 + 0.25 * 3.1 = 2.225
    assert torch.equal(out[1], before)

    class DigitTokenizer:  # a real Qwen tokenizer spells numbers digit by digit
        def get_vocab(self):
            return {"0": 0, ".": 1, "1": 2}

    assert coordinate_token_values(DigitTokenizer()) == {}
    assert coordinate_mean_processor(DigitTokenizer()) is None


def test_grouped_query_sdpa_keeps_the_output_without_copying_heads(tiny, monkeypatch):
    import torch
    from transformers.integrations import sdpa_attention

    from v2lo_utils.generation import grouped_query_sdpa

    loaded = load_model(tiny)
    model, tok = loaded.model, loaded.processor.tokenizer
    text = model.config.text_config
    assert text.num_attention_heads > text.num_key_value_heads  # grouped-query heads
    copies = []
    real = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: copies.append(n) or real(h, n))
    enc = tok(["a sofa", "a bed beside a sofa and a chair"], padding=True, return_tensors="pt")

    def logits_and_grads():
        model.zero_grad()
        out = model(**enc).logits
        out.float().pow(2).mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out.detach(), grads

    plain, plain_grads = logits_and_grads()
    assert copies  # a padding mask: transformers copies the keys and values per query head
    copies.clear()
    with grouped_query_sdpa():
        grouped, grouped_grads = logits_and_grads()
    assert not copies and enc["attention_mask"].min() == 0
    assert torch.allclose(grouped, plain, atol=1e-5)
    assert all(
        torch.allclose(a, b, atol=1e-5) for a, b in zip(grouped_grads, plain_grads, strict=True)
    )
    assert sdpa_attention.use_gqa_in_sdpa.__module__ == sdpa_attention.__name__  # restored
