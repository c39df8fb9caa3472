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
