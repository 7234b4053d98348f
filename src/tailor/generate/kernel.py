"""Moved to `tailor.kernels` (issue 21). This name stays only for generate/decoder.py's import of `argmax`;
it goes when that module imports `from tailor.kernels import argmax`."""

from tailor.kernels import argmax  # noqa: F401
