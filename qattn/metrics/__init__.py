"""Metrics of attention distributions.

- :mod:`~qattn.metrics.divergence`: Jensen-Shannon divergence between attention maps (e.g. the
  four component maps of Hamilton attention; exactly 0 for the shared score).
"""

from qattn.metrics.divergence import divergence_by_layer, js_divergence, layer_divergence, mean_pairwise_js, repeat_components

__all__ = ["divergence_by_layer", "js_divergence", "layer_divergence", "mean_pairwise_js", "repeat_components"]
