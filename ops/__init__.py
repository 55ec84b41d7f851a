"""Operator commands (not deployed): ``python -m ops --help``."""
