"""The experiment harness: what every chapter's experiment is built from.

- :mod:`~qattn.book.harness.config`: the one config convention (frozen dataclasses, profiles as
  data, allowed values, dict round trip).
- :mod:`~qattn.book.harness.training`: the one training loop (validation-only model selection).
- :mod:`~qattn.book.harness.timing`: the one interleaved timing helper.
- :mod:`~qattn.book.harness.memory`: the one fresh-process peak-memory probe.

Submodules are imported on demand.
"""
