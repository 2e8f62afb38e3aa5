"""Detection stage of the worker: detectors per model, their state cells and signals."""
