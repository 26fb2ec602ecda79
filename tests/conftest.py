"""Shared test settings: hypothesis profile (deterministic, bounded) and small helpers."""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "qattn",
    derandomize=True,
    deadline=None,
    max_examples=int(os.environ.get("QATTN_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.load_profile("qattn")
torch.set_num_threads(min(2, torch.get_num_threads()))
