"""`tunesmith <command>`: a thin layer over the Python API (the console script is `tunesmith.cli:main`)."""

from tunesmith.cli.app import build_parser, main
from tunesmith.cli.flags import METHOD_NAMES

__all__ = ["METHOD_NAMES", "build_parser", "main"]
