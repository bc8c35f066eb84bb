"""Checkpoints: nested state of numpy arrays and plain values, written atomically.

A state is a dict whose leaves are numpy arrays or JSON values (numbers,
strings, booleans, None, lists and dicts of them; numpy scalars become plain
numbers). It is stored as one ``.npz`` file: each array as its own member,
and the rest as a JSON document (member ``state.json``) in which every array
is replaced by a reference. Nothing is pickled and loading never unpickles
(``allow_pickle=False``): a checkpoint is data, not code.

:func:`save` writes to a temporary file in the same directory, syncs it and
renames it over the old one, so a process killed at any point leaves either
the old checkpoint or the new one, never a mix.

>>> import numpy as np, tempfile, pathlib
>>> state = {"model": {"center": np.array([0.5, 1.5]), "rng": {"state": 2**100}},
...          "events": 1200, "rows": [{"acc": 0.75, "x": None}]}
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ck.npz"
>>> save(path, state)
>>> back = load(path)
>>> back["model"]["center"].tolist(), back["model"]["rng"]["state"] == 2**100, back["rows"]
([0.5, 1.5], True, [{'acc': 0.75, 'x': None}])
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "poisonsim-checkpoint/1"
_ARRAY = "__array__"
_JSON_MEMBER = "state.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit."""


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    document = {"format": FORMAT, "state": _split(state, arrays)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(f"{name}.npy", member.getvalue())
        archive.writestr(_JSON_MEMBER, json.dumps(document, default=_plain))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(buffer.getvalue())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_stale(path: str | Path) -> int:
    """Remove temporary files a process killed while saving ``path`` left behind; returns how many."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            document = json.loads(archive.zip.read(_JSON_MEMBER))
            if document.get("format") != FORMAT:
                raise CheckpointError(f"{path}: format {document.get('format')!r}, expected {FORMAT!r}")
            return _join(document["state"], archive)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None


def _split(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("checkpoint: object arrays are not allowed (they would need pickle)")
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {_ARRAY: name}
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"checkpoint: dict keys must be strings, got {key!r}")
        return {key: _split(item, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(item, arrays) for item in value]
    return value


def _join(value: Any, archive) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return archive[value[_ARRAY]]
        return {key: _join(item, archive) for key, item in value.items()}
    if isinstance(value, list):
        return [_join(item, archive) for item in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__}; use numpy arrays or plain values")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
