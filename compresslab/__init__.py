"""compresslab: a hands-on workbook for neural-network compression."""

__version__ = "0.1.0"
