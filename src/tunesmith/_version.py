"""The version of tunesmith, in the base layer so that any module can record it."""

__version__ = "0.1.0"
