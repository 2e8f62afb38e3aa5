"""Kafka plumbing outside the stream app: the embedded local broker and topic admin."""
