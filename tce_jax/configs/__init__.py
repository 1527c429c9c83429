"""Experiment configs: `default.py` holds every field; each other file overrides a few."""
