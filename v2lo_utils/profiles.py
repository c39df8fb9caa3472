"""Run profiles (smoke, demo, paper) as data: ``profiles.toml`` beside this file."""

from __future__ import annotations

import tomllib
from pathlib import Path

PROFILES_FILE = Path(__file__).with_name("profiles.toml")


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def profile_names() -> list[str]:
    return list(load_profiles())


def notebook_parameters(profile: str, notebook: str, profiles: dict | None = None) -> dict:
    """The parameters ``profile`` gives notebook ``notebook`` (its stem, e.g. '01_data_inspection'):
    the profile's common values overlaid with the notebook's own."""
    profiles = profiles if profiles is not None else load_profiles()
    if profile not in profiles:
        raise KeyError(f"unknown profile {profile!r}; known: {', '.join(profiles)}")
    p = profiles[profile]
    return {"profile": profile, **p.get("common", {}), **p.get(notebook, {})}


def recipe_parameters(
    recipe: str, overrides: dict | None = None, profiles: dict | None = None, **common
) -> dict[str, dict]:
    """The recipe of profile ``recipe`` as the ablation runs it: its SFT, GRPO and evaluation
    notebooks' parameters (``"02_sft"``, ``"03_grpo"``, ``"05_qvs_bench_analysis"``), each
    overlaid with ``overrides[recipe][notebook]`` (the ablation's budget for that recipe) and
    then with ``common`` (values every stage takes from the ablation itself, e.g. its
    ``data_dir``; a ``model_source`` of "" keeps the recipe's)."""
    from .errors import ParameterError

    profiles = profiles if profiles is not None else load_profiles()
    if recipe not in profiles:
        raise ParameterError(f"recipe {recipe!r}: no such profile; known: {', '.join(profiles)}")
    mine = (overrides or {}).get(recipe, {})
    stages = ("02_sft", "03_grpo", "05_qvs_bench_analysis")
    unknown = set(mine) - set(stages)
    if unknown:
        raise ParameterError(
            f"overrides[{recipe!r}]: only {', '.join(stages)}, not {sorted(unknown)}"
        )
    common = {k: v for k, v in common.items() if not (k == "model_source" and not v)}
    out = {}
    for nb in stages:
        out[nb] = {**notebook_parameters(recipe, nb, profiles), **mine.get(nb, {}), **common}
    if not out["02_sft"].get("model_source"):
        raise ParameterError(
            f"recipe {recipe!r} names no model: pass one, e.g. -p model_source=/models/Qwen2.5-VL-7B-Instruct"
        )
    return out
