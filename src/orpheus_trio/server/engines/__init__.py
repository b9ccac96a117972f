"""Engines the reference server can run."""
