"""Record signing: what the MAC binds, and the deployment key every Kafka process signs with by default."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor

import pytest

from poisonsim.transport.signing import KEY_VARIABLE, Signer, default_key_file, ensure_key_file, load_signer

KEY = b"scenario-key"


@pytest.mark.parametrize("changed", ["scenario", "topic", "value", "truth", "signer"])
def test_a_tag_binds_the_scenario_the_topic_the_value_and_the_truth(changed):
    signer = Signer(b"k" * 32)
    parts = {"scenario": b"scenario-key", "topic": "poisonsim.attack", "value": b"\x01\x02", "truth": b"\x00\x01"}
    tag = signer.sign(*parts.values())
    assert signer.verify(*parts.values(), tag)
    other = Signer(b"o" * 32) if changed == "signer" else signer
    moved = dict(parts)
    if changed != "signer":
        moved[changed] = "poisonsim.benign" if changed == "topic" else parts[changed] + b"\x00"
    assert not other.verify(*moved.values(), tag)


def test_topic_and_value_cannot_trade_bytes():
    """The topic is framed by its length: moving a byte from the topic into the value changes the tag."""
    signer = Signer(b"k" * 32)
    assert signer.sign(KEY, "ab", b"c", b"") != signer.sign(KEY, "a", b"bc", b"")


def test_without_a_key_every_process_of_the_machine_makes_then_shares_one(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONSIM_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    first, origin = load_signer()
    assert origin.endswith("(made now)") and default_key_file() == tmp_path / "keys" / "signing.key"
    assert stat.S_IMODE(default_key_file().stat().st_mode) == 0o600  # the owner's alone
    second, origin = load_signer()
    assert origin == str(default_key_file())
    assert second.sign(KEY, "t", b"v", b"") == first.sign(KEY, "t", b"v", b"")


def _make(path) -> bool:
    return ensure_key_file(path)


def test_processes_starting_at_once_agree_on_one_key(tmp_path):
    path = tmp_path / "signing.key"
    with ProcessPoolExecutor(2) as pool:
        made = list(pool.map(_make, [path] * 16))
    assert sum(made) == 1 and len(bytes.fromhex(path.read_text())) == 32
    assert os.listdir(tmp_path) == ["signing.key"]  # no scratch file left behind


def test_an_explicit_key_wins_and_a_bad_one_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONSIM_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv(KEY_VARIABLE, "ab" * 32)
    assert load_signer()[1] == KEY_VARIABLE and not default_key_file().exists()
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(ValueError, match="--signing-key-file: expected at least 16 bytes"):
        load_signer(tmp_path / "short")
    with pytest.raises(ValueError, match="--signing-key-file: cannot read"):
        load_signer(tmp_path / "absent")


def test_a_key_folder_that_cannot_be_written_says_how_to_make_a_key(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("POISONSIM_KEY_DIR", str(blocked / "keys"))  # under a file: no folder can be made
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    with pytest.raises(ValueError, match="poisonsim keygen"):
        load_signer()
