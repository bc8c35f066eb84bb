"""A module imported on first use: listing the kinds, or running a centroid scenario, never imports torch.

torch takes most of a second to import. The modules of the torch kinds (the
nets, STRIP, Neural Cleanse, ...) name it at their top as ``torch =
lazy("torch")``; it is imported when one of them first reads an attribute of
it, that is when a net is built or judged, not when the kind is registered.

>>> import sys
>>> sys.modules.pop("colorsys", None) and None  # a module nothing here imports
>>> colorsys = lazy("colorsys")
>>> "colorsys" in sys.modules
False
>>> colorsys.rgb_to_hsv(1.0, 0.0, 0.0)
(0.0, 1.0, 1.0)
>>> "colorsys" in sys.modules
True
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for module ``name`` until an attribute is read, then imports it; each attribute read is kept."""

    def __getattr__(self, attribute: str):
        value = getattr(importlib.import_module(self.__name__), attribute)
        setattr(self, attribute, value)  # read once: the next read is a plain attribute
        return value


def lazy(name: str) -> LazyModule:
    """Module ``name``, imported when an attribute of it is first read."""
    return LazyModule(name)
