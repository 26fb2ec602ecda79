"""The experiment models, built from the quaternion layers and attention of :mod:`qattn`.

- :mod:`qattn.models.blocks`: Transformer blocks in four variants (quaternion shared / Hamilton,
  real at the same width, real at the same parameter count) and their initialisation.
- :mod:`qattn.models.vit`: a small quaternion Vision Transformer.
- :mod:`qattn.models.text`: a quaternion Transformer text encoder.

Submodules are imported on demand.
"""
