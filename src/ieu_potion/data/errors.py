"""Errors raised when input data or a saved artifact is missing or laid out wrongly."""


class DataLayoutError(ValueError):
    """A data folder is missing, empty, or not in the layout its loader expects."""


class ArtifactError(DataLayoutError):
    """A saved model, codec or checkpoint is missing a file, truncated, corrupted, or does
    not fit what loads it; the message names the file and what was expected there."""
