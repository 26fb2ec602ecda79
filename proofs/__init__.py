"""Machine-checked proofs of the theory chapter (SymPy), with numeric cross-checks against qattn.

- :mod:`proofs.symbolic`: the engine. A product table (signs of ``e_a e_b``), score forms,
  quaternion projections built from non-commutative block symbols, and the expansion of a score
  into elementary terms ``T(a, b, c, c′) = x_aᵀ W_cᵀ U_c′ y_b``.
- :mod:`proofs.interaction_subspace`: statements 0-5 of the interaction-subspace theorem (our
  reconstruction of the paper's theorem), checked for general ``d`` and ``d_h``;
  :func:`~proofs.interaction_subspace.prove` returns a record or raises.
- :mod:`proofs.numeric`: the same supports recovered from qattn's own layers and score functions
  (bilinear matrices by autograd).
- :mod:`proofs.counts`: multiplication and softmax counts, symbolic and measured.

SymPy is needed (the ``proofs`` extra); the library :mod:`qattn` itself never imports it.
"""

__all__ = ["symbolic", "interaction_subspace", "numeric", "counts"]
