"""Speech tools: metrics (:mod:`~qattn.book.speech.metrics`), training losses (:mod:`~qattn.book.speech.losses`),
WAV input/output (:mod:`~qattn.book.speech.audio`) and the ``python -m qattn.book.speech enhance`` command
(:mod:`~qattn.book.speech.enhance`). Submodules are imported on demand (PESQ/STOI need the ``speech`` extra)."""
