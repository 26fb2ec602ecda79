"""Attention mechanisms: one module per mechanism, each a functional core plus a thin module.

- :mod:`~qattn.attention.shared_score`: the paper's shared-score quaternion attention.
- :mod:`~qattn.attention.hamilton`: Tay et al.'s component-wise (Hamilton) attention.
- :mod:`~qattn.attention.multihead`: ``QuaternionMultiheadAttention`` (any registered score) and
  ``swap_attention`` (a trained model's layers answering with another mechanism).
- :mod:`~qattn.attention.clustered` / :mod:`~qattn.attention.improved_clustered`: clustered and
  improved clustered attention (Vyas et al.), approximations with key masks only.
- :mod:`~qattn.attention.registry`: the registered mechanisms (``Mechanism`` specs by name).
- :mod:`~qattn.attention.bilinear`: bilinear attention networks (BAN) and their quaternion variants.
- :mod:`~qattn.attention.multilinear`: multi-linear attention (MAN) over M ≥ 2 modalities, exact or
  by addition random features (registered as fusion mechanisms).
"""

from qattn.attention.bilinear import BilinearAttentionNetwork
from qattn.attention.hamilton import hamilton_attention, hamilton_scores, hamilton_scores_reference
from qattn.attention.multihead import QuaternionMultiheadAttention, swap_attention
from qattn.attention.multilinear import MultilinearAttention
from qattn.attention.registry import FusionMechanism, Mechanism, fusion_names, get_fusion, get_mechanism, mechanism_names
from qattn.attention.shared_score import shared_score_attention, shared_scores

__all__ = [
    "BilinearAttentionNetwork",
    "FusionMechanism",
    "Mechanism",
    "MultilinearAttention",
    "fusion_names",
    "get_fusion",
    "QuaternionMultiheadAttention",
    "get_mechanism",
    "hamilton_attention",
    "hamilton_scores",
    "hamilton_scores_reference",
    "mechanism_names",
    "shared_score_attention",
    "shared_scores",
    "swap_attention",
]
