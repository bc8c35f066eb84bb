"""Experiments over many scenarios: grid files, sweeps, reports."""
