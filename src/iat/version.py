"""The version of iat, in one place a submodule can import without importing the package root."""

__version__ = "0.1.0"
