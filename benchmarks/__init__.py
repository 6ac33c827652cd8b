"""Runnable benchmarks of gradest (``python -m benchmarks.<name>``)."""
