"""Synthetic datasets in the exact layouts of the real ones, for tests and the demo."""
