"""Benign sources; each kind registers itself in :data:`poisonsim.registry.SOURCES` where it is written."""

from __future__ import annotations

from poisonsim.sources.datasets import (
    BUNDLED_RIVER_SETS,
    Blobs,
    Digits,
    Mnist,
    RiverSet,
    Source,
    SourceKind,
    augment_images,
    make_source,
)

__all__ = [
    "BUNDLED_RIVER_SETS",
    "Blobs",
    "Digits",
    "Mnist",
    "RiverSet",
    "Source",
    "SourceKind",
    "augment_images",
    "make_source",
]
