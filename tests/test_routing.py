"""Request-target parsing and template matching."""

from __future__ import annotations

import pytest

from gateway.errors import MalformedRequest
from gateway.routing import RouteTable, Template, parse_target


def test_parses_partner_segments_and_query() -> None:
    target = parse_target("/acme-credit/v1/files/f_1?page=2&q=a%20b+c", max_query_params=10)
    assert target.partner == "acme-credit"
    assert target.segments == ("v1", "files", "f_1")
    assert target.query == (("page", "2"), ("q", "a b c"))


@pytest.mark.parametrize(
    "raw",
    [
        "http://evil.example/acme/v1/assess",  # absolute-form
        "//evil.example/acme/v1/assess",  # authority-like
        "*",
        "/acme/v1/../admin",
        "/acme/v1/./assess",
        "/acme/v1/%2e%2e/admin",
        "/acme/v1%2fassess",
        "/acme/v1%2Fassess",
        "/acme/v1%5cassess",
        "/acme/v1\\assess",
        "/acme/v1%252fassess",  # double encoding
        "/acme//v1/assess",
        "/acme/v1/assess/",  # trailing slash is an empty segment
        "/acme/v1/assess;jsessionid=1",
        "/acme/v1/assess%00",
        "/acme/v1/\x00assess",
        "/acme/v1/ässess",
        "/acme/v1/assess#frag",
        "/acme",
        "/",
    ],
)
def test_refuses_ambiguous_paths(raw: str) -> None:
    with pytest.raises(MalformedRequest):
        parse_target(raw, max_query_params=10)


@pytest.mark.parametrize(
    "query",
    [
        "a=1&a=2",  # repeated: which one would the partner use?
        "a=1&&b=2",
        "a=%ZZ",
        "a=%ff",  # not UTF-8
        "a=b c",
        "=x",
        "a=%00",
    ],
)
def test_refuses_ambiguous_queries(query: str) -> None:
    with pytest.raises(MalformedRequest):
        parse_target(f"/acme/v1/x?{query}", max_query_params=10)


def test_query_parameter_count_is_capped() -> None:
    query = "&".join(f"p{i}=1" for i in range(5))
    assert len(parse_target(f"/a/b?{query}", max_query_params=5).query) == 5
    with pytest.raises(MalformedRequest, match="more than 4"):
        parse_target(f"/a/b?{query}", max_query_params=4)


def test_template_matches_exactly_and_captures_placeholders() -> None:
    template = Template.parse("/v1/files/{file_id}/meta")
    assert template.match(["v1", "files", "abc-1", "meta"]) == {"file_id": "abc-1"}
    assert template.match(["v1", "files", "abc", "Meta"]) is None  # case-sensitive
    assert template.match(["v1", "files", "..", "meta"]) is None
    assert template.match(["v1", "files", "abc"]) is None
    assert template.match(["V1", "files", "abc", "meta"]) is None


def test_route_table_is_indexed_by_method_and_length() -> None:
    table = RouteTable.build(
        [
            ("POST", Template.parse("/v1/assess"), "assess"),
            ("GET", Template.parse("/v1/assess"), "read"),
            ("PUT", Template.parse("/v1/docs/{id}"), "upload"),
        ]
    )
    assert table.match("POST", ["v1", "assess"]) == [("assess", {})]
    assert table.match("GET", ["v1", "assess"]) == [("read", {})]
    assert table.match("PUT", ["v1", "docs", "d1"]) == [("upload", {"id": "d1"})]
    assert table.match("DELETE", ["v1", "assess"]) == []
    assert table.match("post", ["v1", "assess"]) == []
