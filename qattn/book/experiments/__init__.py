"""Experiments: one module per experiment, each with a config dataclass, ``config_for(profile, seed)``
and ``run(config) -> dict`` (JSON-serialisable metrics, with ``metrics["headline"]``).

- :mod:`qattn.book.experiments.vision`: quaternion ViT on Fashion-MNIST.
- :mod:`qattn.book.experiments.nlp`: quaternion Transformer on tweet sentiment.
- :mod:`qattn.book.experiments.classification`: the comparison loop both share.

Submodules are imported on demand.
"""
