"""hbd.http: the one place URLs and the bearer header are spelled."""

from __future__ import annotations

import pytest

from hbd.http import auth_headers, base_url, host_url, local_url, token_matches


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8765"),
        ("::1", "http://[::1]:8765"),
        ("[::1]", "http://[::1]:8765"),
        ("example.org", "http://example.org:8765"),
    ],
)
def test_host_url_brackets_ipv6_once(host: str, url: str) -> None:
    assert host_url(host, 8765) == url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:1"),
        ("", "http://127.0.0.1:1"),
        ("::", "http://[::1]:1"),
        ("10.0.0.2", "http://10.0.0.2:1"),
    ],
)
def test_a_wildcard_bind_is_reached_over_loopback(host: str, url: str) -> None:
    assert local_url(host, 1) == url


def test_no_token_sends_no_header_and_a_token_sends_bearer() -> None:
    assert auth_headers(None) == {}
    assert auth_headers("") == {}
    assert auth_headers("s3cret") == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Bearer s3cret", True),
        (b"Bearer s3cret", True),
        ("Bearer s3cre", False),
        ("bearer s3cret", False),
        ("s3cret", False),
        (None, False),
        ("Bearer s3cret\x00", False),
    ],
)
def test_token_matches_only_the_exact_header(header: str | bytes | None, matches: bool) -> None:
    assert token_matches(header, "s3cret") is matches


def test_base_url_drops_trailing_slashes_only() -> None:
    assert base_url("http://h:1/api//") == "http://h:1/api"
    assert base_url("http://h:1") == "http://h:1"
