"""Operational conditions of model servers (memory leak, silence, GPU saturation), reported as transitions."""
