"""Helpers that run inside the application containers, not in the CLI.

This folder (with ``deploystack/__init__.py``) is copied into every APC image at
``/opt/deploystack/``, so nothing here may import the rest of deploystack.
"""
