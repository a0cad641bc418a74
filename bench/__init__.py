"""Benchmarks and the chaos run (each module is a script: python bench/<name>.py --help)."""
