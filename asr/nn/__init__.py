"""Neural network modules: encoders and heads."""


class NotExportable(ValueError):
    """A head or encoder (or part of one) that has no ONNX export yet; the message says what and why.
    (Here, so that heads and encoders raise the one class without importing each other.)"""
