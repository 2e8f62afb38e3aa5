"""Streaming anomaly detectors over numeric telemetry, vectorised per batch."""
