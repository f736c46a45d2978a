"""The single source of hvx's version number."""

__version__ = "0.1.0"
