"""Benchmarks that print figures (`python -m diffbfr_jax.benchmarks.<name> --help`)."""
