"""Fuzzing harness: seed images, per-reader targets and the atheris runner (``run.py``)."""
