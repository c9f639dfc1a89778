"""Measurements: python -m bench.<name>."""
