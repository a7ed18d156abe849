"""The benchmark suite: scenarios, runner, baselines and peers. Run it with ``python -m benchmarks``."""

__all__: list[str] = []
