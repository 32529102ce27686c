"""The origin allowlist: who may open our WebSockets from a browser page."""

from __future__ import annotations

import pytest

from realtime.config import Settings
from realtime.core.origins import OriginPolicy, normalize, parse_allowlist


def test_normalize_canonical_origins():
    assert normalize("HTTPS://Example.EDU:443") == "https://example.edu"
    assert normalize("http://localhost:8080/") == "http://localhost:8080"
    assert normalize("http://[::1]:80") == "http://[::1]"
    for bad in ("null", "file:///x", "example.edu", "https://x.edu/path", "ftp://x.edu", "http://x:99999"):
        assert normalize(bad) is None, bad


def test_allowlist_parsing_and_errors():
    assert parse_allowlist(" https://a.edu , http://b.edu:8080,,") == {"https://a.edu", "http://b.edu:8080"}
    assert parse_allowlist("*") == {"*"}
    with pytest.raises(ValueError, match="not an origin"):
        parse_allowlist("https://a.edu, a.edu")
    with pytest.raises(ValueError, match="allowed_origins"):
        Settings(allowed_origins="https://a.edu/page")


def test_policy():
    policy = OriginPolicy("https://lms.example.edu")
    assert policy.allows(None, "captions.example.edu")  # no Origin: not a browser
    assert policy.allows("https://captions.example.edu", "captions.example.edu")  # our own page, behind TLS proxy
    assert policy.allows("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not policy.allows("http://127.0.0.1:9000", "127.0.0.1:8000")  # another port is another site
    assert policy.allows("https://LMS.example.edu", "captions.example.edu")
    assert not policy.allows("https://evil.example", "captions.example.edu")
    assert not policy.allows("null", "captions.example.edu")
    assert policy.cross_origin("https://lms.example.edu", "captions.example.edu")
    assert not policy.cross_origin("https://captions.example.edu", "captions.example.edu")
    assert not policy.cross_origin("https://evil.example", "captions.example.edu")
    assert OriginPolicy("*").allows("https://anyone.example", "x") and OriginPolicy("*").allows("null", "x")


def test_host_policy_with_open_rooms_serves_only_loopback_names() -> None:
    from realtime.core.origins import HostPolicy

    policy = HostPolicy(open_rooms=True)
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "127.5.5.5", "LOCALHOST"):
        assert policy.allows(host), host
    for host in ("rebind.evil.example:8000", "127.0.0.1.nip.io", "", None, "a b", "[::1"):
        assert not policy.allows(host), host


def test_host_policy_with_a_public_url_serves_its_host_and_loopback() -> None:
    from realtime.core.origins import HostPolicy

    policy = HostPolicy(open_rooms=False, public_url="https://captions.example.edu")
    assert policy.allows("captions.example.edu") and policy.allows("Captions.Example.edu:443")
    assert policy.allows("127.0.0.1:8000") and not policy.allows("evil.example")
    assert HostPolicy(open_rooms=False).allows("anything.example")  # a LAN server with no public URL
