"""Event contracts and codec: decode, validate against ``schemas/``, encode."""
