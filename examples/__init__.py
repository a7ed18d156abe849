"""Runnable examples; benchmarks import them (``examples.driver_day.run_day``)."""
