"""Speech tools: metrics (:mod:`~qattn.speech.metrics`), training losses (:mod:`~qattn.speech.losses`),
WAV input/output (:mod:`~qattn.speech.audio`) and the ``python -m qattn.speech enhance`` command
(:mod:`~qattn.speech.enhance`). Submodules are imported on demand (PESQ/STOI need the ``speech`` extra)."""
