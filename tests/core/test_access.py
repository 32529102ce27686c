"""Access rules without a server: keys and their hashes, loopback binds, bearer headers, slugs, the Gate and the
client addresses."""

from __future__ import annotations

import hashlib
import re

import pytest

from realtime.core.access import (
    Gate,
    bearer,
    client_address,
    hash_key,
    is_loopback,
    key_matches,
    new_key,
    open_rooms_allowed,
    proxied,
    slug,
)

# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("prefix", ["sk_", "vk_", "ak_"])
def test_new_key_has_prefix_and_32_urlsafe_chars(prefix: str) -> None:
    key = new_key(prefix)
    assert key.startswith(prefix)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", key[len(prefix):])  # 24 random bytes in URL-safe base64


def test_new_keys_are_unique() -> None:
    keys = {new_key("sk_") for _ in range(1000)}
    assert len(keys) == 1000


def test_hash_key_is_prefixed_sha256() -> None:
    assert hash_key("sk_abc") == "sha256:" + hashlib.sha256(b"sk_abc").hexdigest()
    assert hash_key("sk_abc") != hash_key("sk_abd")


def test_key_matches() -> None:
    key = "sk_" + "x" * 32
    stored = hash_key(key)
    assert key_matches(key, stored) is True
    assert key_matches("sk_other", stored) is False
    assert key_matches(key[:-1] + "y", stored) is False  # one character differs
    assert key_matches(key + " ", stored) is False
    assert key_matches(None, stored) is False
    assert key_matches("", stored) is False
    assert key_matches(key, None) is False
    assert key_matches(key, "") is False
    assert key_matches("", hash_key("")) is False  # an empty key never matches, even its own hash


# ---------------------------------------------------------------- hosts and headers


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("lecture.example.org", False),
    ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize("host, admin, expected", [
    ("127.0.0.1", False, True), ("127.0.0.1", True, False), ("0.0.0.0", False, False), ("0.0.0.0", True, False),
])
def test_open_rooms_allowed(host: str, admin: bool, expected: bool) -> None:
    assert open_rooms_allowed(host, admin) is expected


@pytest.mark.parametrize("header, expected", [
    ("Bearer sk_abc", "sk_abc"), ("bearer sk_abc", "sk_abc"), ("BEARER sk_abc", "sk_abc"),
    ("  Bearer    sk_abc  ", "sk_abc"), ("Basic dXNlcjpwdw==", None), ("Bearer", None), ("Bearer   ", None),
    ("", None), (None, None), ("sk_abc", None),
])
def test_bearer(header: str | None, expected: str | None) -> None:
    assert bearer(header) == expected


# ---------------------------------------------------------------- slugs


@pytest.mark.parametrize("title, expected", [
    ("Physics 101 (Dr. Müller)", "physics-101-dr-muller"),
    ("Éléments d'Analyse — Cours n°3", "elements-d-analyse-cours-n3"),
    ("  --Hello,  World!!--  ", "hello-world"),
    ("", "room"), ("!!! ???", "room"), ("日本語", "room"),
])
def test_slug(title: str, expected: str) -> None:
    assert slug(title) == expected


def test_slug_cuts_long_titles_without_a_trailing_dash() -> None:
    assert slug("a" * 100) == "a" * 48
    assert slug("abcd efgh", max_len=5) == "abcd"  # the cut lands right after the dash
    assert slug("abc defg", max_len=6) == "abc-de"
    assert slug("word " * 20, max_len=10) == "word-word"


# ---------------------------------------------------------------- gate

ADMIN = "ak_plain-admin"
STORED_ADMIN = "ak_stored-admin"
SPEAKER = "sk_speaker"
VIEWER = "vk_viewer"
SK_HASH, VK_HASH = hash_key(SPEAKER), hash_key(VIEWER)


@pytest.mark.parametrize("open_rooms, key, expected", [
    (True, None, None), (True, "anything", None), (True, ADMIN, None),
    (False, None, "key_required"), (False, "", "key_required"), (False, "sk_wrong", "key_required"),
    (False, ADMIN, None), (False, STORED_ADMIN, None),
])
def test_publish_refusal_in_an_open_room(open_rooms: bool, key: str | None, expected: str | None) -> None:
    gate = Gate(open_rooms, admin_key=ADMIN, admin_key_hash=hash_key(STORED_ADMIN))
    assert gate.publish_refusal(None, key) == expected


@pytest.mark.parametrize("open_rooms", [True, False])
@pytest.mark.parametrize("key, expected", [
    (None, "key_required"), ("", "key_required"), ("sk_wrong", "bad_key"), (VIEWER, "bad_key"),
    (SPEAKER, None), (ADMIN, None), (STORED_ADMIN, None),
])
def test_publish_refusal_in_a_keyed_room(open_rooms: bool, key: str | None, expected: str | None) -> None:
    gate = Gate(open_rooms, admin_key=ADMIN, admin_key_hash=hash_key(STORED_ADMIN))
    assert gate.publish_refusal(SK_HASH, key) == expected


def test_admin_from_the_plain_key_only() -> None:
    gate = Gate(False, admin_key=ADMIN)
    assert gate.has_admin is True
    assert gate.is_admin(ADMIN) is True
    assert gate.is_admin(STORED_ADMIN) is False
    assert gate.publish_refusal(SK_HASH, ADMIN) is None
    assert gate.publish_refusal(SK_HASH, STORED_ADMIN) == "bad_key"


def test_admin_from_the_stored_hash_only() -> None:
    gate = Gate(False, admin_key_hash=hash_key(STORED_ADMIN))
    assert gate.has_admin is True
    assert gate.is_admin(STORED_ADMIN) is True
    assert gate.is_admin(ADMIN) is False
    assert gate.publish_refusal(None, STORED_ADMIN) is None
    assert gate.publish_refusal(None, ADMIN) == "key_required"


def test_no_admin() -> None:
    gate = Gate(True)
    assert gate.has_admin is False
    assert gate.is_admin(None) is False
    assert gate.is_admin("") is False
    assert gate.is_admin(ADMIN) is False
    assert Gate(True, admin_key="", admin_key_hash=None).has_admin is False


@pytest.mark.parametrize("key", [None, "", "whatever", VIEWER, SPEAKER, ADMIN])
def test_public_rooms_are_open_to_all(key: str | None) -> None:
    assert Gate(False, admin_key=ADMIN).may_view(None, SK_HASH, key) is True


@pytest.mark.parametrize("key, expected", [
    (VIEWER, True), (SPEAKER, True), (ADMIN, True), (STORED_ADMIN, True), ("vk_wrong", False), ("", False),
    (None, False),
])
def test_private_room_viewing(key: str | None, expected: bool) -> None:
    gate = Gate(False, admin_key=ADMIN, admin_key_hash=hash_key(STORED_ADMIN))
    assert gate.may_view(VK_HASH, SK_HASH, key) is expected


def test_private_open_room_without_speaker_key() -> None:
    gate = Gate(True)
    assert gate.may_view(VK_HASH, None, VIEWER) is True
    assert gate.may_view(VK_HASH, None, SPEAKER) is False


def test_open_rooms_are_not_for_a_reverse_proxys_clients() -> None:
    assert open_rooms_allowed("127.0.0.1", False) and not open_rooms_allowed("127.0.0.1", False, "https://c.edu")
    gate = Gate(open_rooms=True)
    assert gate.publish_refusal(None, None, local=True) is None
    assert gate.publish_refusal(None, None, local=False) == "key_required"
    assert proxied({"X-Forwarded-For": "203.0.113.9"}) and proxied({"Forwarded": "for=203.0.113.9"})
    assert proxied({"X-Real-IP": "203.0.113.9"}) and not proxied({"Host": "127.0.0.1:8000"})


def test_open_rooms_must_be_asked_for() -> None:
    assert not open_rooms_allowed("127.0.0.1", False, "", requested=False)
    assert open_rooms_allowed("127.0.0.1", False, "", requested=True)
    assert not open_rooms_allowed("0.0.0.0", False, "", requested=True)


@pytest.mark.parametrize("peer, headers, expected", [
    ("203.0.113.9", {}, "203.0.113.9"),
    ("203.0.113.9", {"X-Forwarded-For": "10.0.0.1"}, "203.0.113.9"),  # not our proxy: its headers say nothing
    ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),  # the hop our proxy appended
    ("127.0.0.1", {"X-Real-IP": "198.51.100.8"}, "198.51.100.8"),
    ("::1", {}, "::1"),
    (None, {}, "unknown"),
])
def test_client_address_trusts_only_a_local_proxy(peer, headers, expected) -> None:
    assert client_address(peer, headers) == expected
