"""qattn: quaternion attention with shared scores, its baselines, and the tools to reproduce the paper.

Import-light: only torch and numpy are needed at run time.

>>> import torch, qattn
>>> layer = qattn.QuaternionMultiheadAttention(32, 2, score="shared", batch_first=True)
>>> layer(torch.zeros(1, 3, 32), torch.zeros(1, 3, 32), torch.zeros(1, 3, 32))[0].shape
torch.Size([1, 3, 32])
"""

from qattn.attention import (
    Mechanism,
    QuaternionMultiheadAttention,
    get_mechanism,
    hamilton_attention,
    hamilton_scores,
    hamilton_scores_reference,
    mechanism_names,
    shared_score_attention,
    shared_scores,
)
from qattn.layers import QuaternionConv1d, QuaternionConv2d, QuaternionConvTranspose2d, QuaternionLinear

__version__ = "0.1.0"

__all__ = [
    "Mechanism",
    "QuaternionConv1d",
    "QuaternionConv2d",
    "QuaternionConvTranspose2d",
    "QuaternionLinear",
    "QuaternionMultiheadAttention",
    "get_mechanism",
    "hamilton_attention",
    "hamilton_scores",
    "hamilton_scores_reference",
    "mechanism_names",
    "shared_score_attention",
    "shared_scores",
]
