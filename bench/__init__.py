"""The benchmark behind `make bench`: see `bench.run` and docs/PERFORMANCE.md."""
