"""Test set-up: one thread per process (two cores here), and hypothesis profiles."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """A small training set (56 px frames) and the tiny preset, built once for the training tests."""
    from v2lo_utils.dataset import BuildConfig, build_training_set
    from v2lo_utils.presets import create_preset

    base = tmp_path_factory.mktemp("tiny_workspace")
    build_training_set(base / "data", BuildConfig(scenes=3, seed=2, image_size=56, workers=1))
    create_preset("tiny", base / "models" / "tiny")
    return base
