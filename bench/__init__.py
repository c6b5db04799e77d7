"""Benchmarks: run by hand, each reports ratios against a baseline measured in the same run."""
