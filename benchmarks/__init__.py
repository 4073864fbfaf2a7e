"""Benchmarks: each module runs as a script (`.venv/bin/python benchmarks/NAME.py`)."""
