"""The library under poisonsim's producers and consumers: sources, attacks, models, defenses, evaluation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("poisonsim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
