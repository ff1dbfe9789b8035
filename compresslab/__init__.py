"""compresslab: a hands-on workbook for neural-network compression.

Layers, bottom to top (arrows point down only): `core` (data, models, training, metrics, results),
`techniques` (one module per technique), `deploy` (runtimes), `views` (figures and widget panels),
`running` (notebook runner, CLI), `exercises` (building and grading). See docs/architecture.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("compresslab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
