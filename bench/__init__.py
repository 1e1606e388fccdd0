"""Benchmarks that measure ratios in one run and write bench/results/*.json; never run as tests."""
