"""The book side of qattn: everything that exists to reproduce the papers' experiments.

The library (:mod:`qattn`: quaternion algebra, layers, attention mechanisms, attention metrics)
never imports this package; this package is built on the library. It needs the ``book``,
``experiments`` and ``speech`` extras.

- :mod:`~qattn.book.paths`: the one place that defines the data cache, results and model folders.
- :mod:`~qattn.book.harness`: the experiment harness (configs and profiles, the training loop,
  timing and memory probes).
- :mod:`~qattn.book.data`: offline data sets (loaders and generators).
- :mod:`~qattn.book.models`: the experiment models built from the library's layers.
- :mod:`~qattn.book.experiments`: one module per chapter, named after the chapter's slug
  (``notebooks/<slug>.ipynb`` → ``qattn.book.experiments.<slug>`` → ``<slug>.json``).
- :mod:`~qattn.book.speech`: speech metrics, losses, audio I/O and ``python -m qattn.book.speech enhance``.
- :mod:`~qattn.book.provenance`, :mod:`~qattn.book.report`: results with provenance, the
  reproduction report.

Submodules are imported on demand.
"""
