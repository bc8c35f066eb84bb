"""Signed records: a keyed MAC over what a record says and where it belongs, so a client without the key
can neither forge a record nor move a real one to another topic.

Producers sign each message with HMAC-SHA256 over the scenario key, the
topic, the value (which holds the events' ids and features) and the
``truth`` header (so neither the events nor the ground truth the evaluator
trusts can be changed, invented or replayed onto another role's topic) and
send the tag in the ``sig`` header; the learner and the detector refuse a
record whose tag is missing or wrong.

Every Kafka process signs by default. The key comes from, in order:
``--signing-key-file``, ``POISONSIM_SIGNING_KEY`` (hex), or the key file of
this machine's deployment (:func:`default_key_file`), written once with a
fresh random key the first time a process needs it, so the producers and the
learner started the ordinary way on one machine share it. Only the
explicitly named ``--insecure-unsigned`` turns signing off.

>>> signer = Signer(b"k" * 32)
>>> tag = signer.sign(b"scenario-1", "benign", b"value", b"\\x01")
>>> signer.verify(b"scenario-1", "benign", b"value", b"\\x01", tag)
True
>>> signer.verify(b"scenario-1", "benign", b"valuE", b"\\x01", tag), signer.verify(b"scenario-1", "attack", b"value", b"\\x01", tag)
(False, False)
>>> signer.verify(b"scenario-1", "benign", b"value", b"\\x01", None)
False
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SIGNATURE_HEADER = "sig"
KEY_VARIABLE = "POISONSIM_SIGNING_KEY"
KEY_DIRECTORY_VARIABLE = "POISONSIM_KEY_DIR"
MIN_KEY_BYTES = 16


def _framed(*parts: bytes) -> bytes:
    """Each part behind its length: no two different sequences of parts give the same bytes."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


class Signer:
    """HMAC-SHA256 tags over (scenario key, topic, value, truth header)."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"expected at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._bases: dict[tuple[bytes, str], hmac.HMAC] = {}

    def __repr__(self) -> str:
        return "Signer(<key hidden>)"

    def sign(self, scenario_key: bytes, topic: str, value: bytes, truth: bytes) -> bytes:
        """The tag of one record of ``topic``."""
        base = self._bases.get((scenario_key, topic))
        if base is None:  # the MAC state after the scenario key and the topic, computed once per pair
            base = hmac.new(self._key, _framed(scenario_key, topic.encode()), hashlib.sha256)
            self._bases[scenario_key, topic] = base
        mac = base.copy()
        mac.update(len(value).to_bytes(4, "big"))
        mac.update(value)
        mac.update(truth)
        return mac.digest()

    def verify(self, scenario_key: bytes, topic: str, value: bytes, truth: bytes | None, tag: bytes | None) -> bool:
        """Whether ``tag`` is this record's, read from ``topic`` (in constant time)."""
        if not isinstance(tag, bytes) or not isinstance(truth, bytes) or not isinstance(value, bytes):
            return False
        return hmac.compare_digest(self.sign(scenario_key, topic, value, truth), tag)


def default_key_file() -> Path:
    """Where the processes of one machine's deployment keep their shared key: ``$POISONSIM_KEY_DIR``, else
    ``$XDG_CONFIG_HOME/poisonsim``, else ``~/.config/poisonsim``; the file ``signing.key`` there."""
    folder = os.environ.get(KEY_DIRECTORY_VARIABLE)
    if not folder:
        folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "poisonsim"
    return Path(folder) / "signing.key"


def ensure_key_file(path: Path) -> bool:
    """Write a fresh random key to ``path`` (owner-only) unless a file is there; True when this call wrote it.
    Two processes starting at once agree: the file is created exclusively and filled before it is renamed in."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(new_key() + "\n")
    try:
        os.link(scratch, path)  # fails if another process got there first: its key stands
        return True
    except FileExistsError:
        return False
    finally:
        scratch.unlink()


def read_key_file(path: str | Path, where: str) -> Signer:
    """The signer of the key in ``path`` (hex or raw text); ``where`` names the setting in errors."""
    try:
        text = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"{where}: cannot read {path!s} ({exc.strerror})") from None
    return _signer(text, where)


def _signer(text: bytes, where: str) -> Signer:
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = text
    try:
        return Signer(key)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_signer(key_file: str | Path | None = None) -> tuple[Signer, str]:
    """The signer and where its key came from: ``key_file``, else ``POISONSIM_SIGNING_KEY``, else
    :func:`default_key_file` (made on first use)."""
    if key_file is not None:
        return read_key_file(key_file, "--signing-key-file"), str(key_file)
    if os.environ.get(KEY_VARIABLE):
        return _signer(os.environ[KEY_VARIABLE].strip().encode(), KEY_VARIABLE), KEY_VARIABLE
    path = default_key_file()
    try:
        made = ensure_key_file(path)
    except OSError as exc:
        raise ValueError(
            f"signing key: cannot create {path} ({exc.strerror}); make one with `poisonsim keygen > "
            f"KEYFILE` and pass --signing-key-file KEYFILE"
        ) from None
    return read_key_file(path, "signing key"), f"{path}{' (made now)' if made else ''}"


def new_key() -> str:
    """A fresh random key, as hex (what ``poisonsim keygen`` prints and compose shares)."""
    return secrets.token_hex(32)
