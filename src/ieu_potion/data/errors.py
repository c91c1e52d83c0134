"""Errors raised when input data is missing or laid out wrongly."""


class DataLayoutError(ValueError):
    """A data folder is missing, empty, or not in the layout its loader expects."""
