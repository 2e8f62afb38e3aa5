"""Drift detectors and tests: pure, deterministic, state as versioned JSON."""
