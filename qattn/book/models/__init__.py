"""The experiment models, built from the quaternion layers and attention of :mod:`qattn`.

- :mod:`qattn.book.models.blocks`: Transformer blocks in four variants (quaternion shared / Hamilton,
  real at the same width, real at the same parameter count) and their initialisation.
- :mod:`qattn.book.models.vit`: a small quaternion Vision Transformer.
- :mod:`qattn.book.models.text`: a quaternion Transformer text encoder.

Submodules are imported on demand.
"""
