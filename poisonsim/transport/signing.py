"""Signed records: a keyed MAC over what a record says, so a client without the key cannot forge one.

Producers sign each message with HMAC-SHA256 over the scenario key, the
value and the ``truth`` header (so neither the events nor the ground truth
the evaluator trusts can be changed or invented) and send the tag in the
``sig`` header; the learner and the detector refuse a record whose tag is
missing or wrong. The key comes from ``POISONSIM_SIGNING_KEY`` or a file
(``--signing-key-file``); without one, records go unsigned and unchecked.

>>> signer = Signer(b"k" * 32)
>>> tag = signer.sign(b"scenario-1", b"value", b"\\x01")
>>> signer.verify(b"scenario-1", b"value", b"\\x01", tag), signer.verify(b"scenario-1", b"valuE", b"\\x01", tag)
(True, False)
>>> signer.verify(b"scenario-1", b"value", b"\\x01", None)
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
MIN_KEY_BYTES = 16


class Signer:
    """HMAC-SHA256 tags over (scenario key, value, truth header)."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"expected at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._bases: dict[bytes, hmac.HMAC] = {}

    def __repr__(self) -> str:
        return "Signer(<key hidden>)"

    def sign(self, scenario_key: bytes, value: bytes, truth: bytes) -> bytes:
        """The tag of one record."""
        base = self._bases.get(scenario_key)
        if base is None:  # the MAC state after the scenario key, computed once per scenario
            base = self._bases[scenario_key] = hmac.new(self._key, len(scenario_key).to_bytes(4, "big") + scenario_key,
                                                        hashlib.sha256)  # fmt: skip
        mac = base.copy()
        mac.update(len(value).to_bytes(4, "big"))
        mac.update(value)
        mac.update(truth)
        return mac.digest()

    def verify(self, scenario_key: bytes, value: bytes, truth: bytes | None, tag: bytes | None) -> bool:
        """Whether ``tag`` is this record's (in constant time)."""
        if not isinstance(tag, bytes) or not isinstance(truth, bytes) or not isinstance(value, bytes):
            return False
        return hmac.compare_digest(self.sign(scenario_key, value, truth), tag)


def load_signer(key_file: str | Path | None = None) -> Signer | None:
    """The signer from ``key_file`` or ``POISONSIM_SIGNING_KEY`` (hex or raw text); None when neither is set."""
    if key_file is not None:
        try:
            text = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"--signing-key-file: cannot read {key_file!s} ({exc.strerror})") from None
        where = "--signing-key-file"
    elif os.environ.get(KEY_VARIABLE):
        text, where = os.environ[KEY_VARIABLE].strip().encode(), KEY_VARIABLE
    else:
        return None
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = text
    try:
        return Signer(key)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def new_key() -> str:
    """A fresh random key, as hex (what ``poisonsim keygen`` prints and compose shares)."""
    return secrets.token_hex(32)
