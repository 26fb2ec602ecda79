"""Metrics of attention distributions.

- :mod:`~qattn.metrics.divergence`: Jensen-Shannon divergence between attention maps (e.g. the
  four component maps of Hamilton attention; exactly 0 for the shared score).
- :mod:`~qattn.metrics.concentration`: attention concentration onto prompt positions (strength and
  fluctuation over inputs) and the two losses that raise strength and lower fluctuation
  (Concentrate Attention, Li et al. 2024).
"""

from qattn.metrics.concentration import concentration, fluctuation_loss, strength_and_fluctuation, strength_loss
from qattn.metrics.divergence import divergence_by_layer, js_divergence, layer_divergence, mean_pairwise_js, repeat_components

__all__ = [
    "concentration",
    "fluctuation_loss",
    "strength_and_fluctuation",
    "strength_loss",
    "divergence_by_layer",
    "js_divergence",
    "layer_divergence",
    "mean_pairwise_js",
    "repeat_components",
]
