"""Alerting: rules over metrics snapshots and signals, alert lifecycle, inhibition and silences."""
