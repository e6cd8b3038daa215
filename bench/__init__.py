"""Benchmarks: serving overhead and batching (serving.py), full-size model speed (fullsize.py)."""
