"""The experiment harness: what every chapter's experiment is built from.

- :mod:`~qattn.book.harness.training`: the one training loop (validation-only model selection).

Submodules are imported on demand.
"""
