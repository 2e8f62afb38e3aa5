"""Faust wiring only: the app factory, topics and thin agents (decode -> core -> emit)."""

from streams.app.factory import create_app

__all__ = ["create_app"]
