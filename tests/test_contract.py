from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from gateway import yamlfile
from gateway.contract import (
    BasicAuth,
    Contract,
    FieldRule,
    GeneralizeSpec,
    HashSpec,
    HeaderAuth,
    MaskSpec,
    NoAuth,
    RedactSpec,
    Route,
    Terms,
    Upstream,
    schema_problems,
    to_transform,
)
from gateway.transforms import GeneralizeBucket, GeneralizeYear, Hash, Mask, Redact
from gateway.yamlfile import YamlFileError, load_yaml, read_yaml_file

CONTRACT: dict[str, Any] = {
    "partner": {"id": "acme", "name": "ACME Co.", "kind": "other", "relationship": "entrusted"},
    "contract": {
        "id": "DPA-1",
        "version": 1,
        "effective": date(2025, 1, 1),
        "expires": date(2027, 12, 31),
        "status": "active",
    },
    "upstream": {"base_url": "https://api.acme.example", "location": "CN"},
    "purposes": ["service_delivery"],
    "categories": ["identity.name"],
    "terms": {"retention_days": 30},
    "routes": [
        {
            "method": "POST",
            "path": "/v1/things",
            "purpose": "service_delivery",
            "fields": [{"path": "name", "category": "identity.name"}],
        }
    ],
}


def errors_of(model: Any, data: object) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return schema_problems(caught.value)


def route_errors(**fields: object) -> list[tuple[str, str]]:
    data: dict[str, object] = {"method": "POST", "path": "/v1/x", "purpose": "p"}
    data.update(fields)
    return errors_of(Route, data)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_of_a_minimal_contract() -> None:
    contract = Contract.model_validate(CONTRACT)
    assert contract.upstream.timeout_s == 10
    assert contract.upstream.auth == NoAuth(type="none")
    assert contract.upstream.reuse_connections is True
    terms = contract.terms
    assert terms.onward_transfer is False
    assert terms.cross_border.allowed is False
    assert terms.cross_border.mechanism is None
    assert terms.sensitive.allowed == ()
    assert terms.sensitive.consent_required is True
    assert terms.minors == "deny"
    assert terms.rate_limit_per_s is None
    assert terms.max_records_per_day is None
    route = contract.routes[0]
    assert route.direction == "push"
    assert route.headers == ()
    assert route.content_types is None
    assert route.response is None
    assert route.fields == (FieldRule(path="name", category="identity.name"),)


def test_models_are_frozen() -> None:
    contract = Contract.model_validate(CONTRACT)
    with pytest.raises(ValidationError):
        contract.partner.id = "other"  # type: ignore[misc]


def test_dates_may_be_written_as_iso_strings() -> None:
    data = {**CONTRACT, "contract": {**CONTRACT["contract"], "effective": "2025-01-01"}}
    assert Contract.model_validate(data).contract.effective == date(2025, 1, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (20250101, "must be a date (YYYY-MM-DD)"),
        ("01/01/2025", "must be a date (YYYY-MM-DD)"),
        (
            "2025-02-30",
            "2025-02-30 is not a day of the calendar",
        ),
        # `effective: 2025-01-01 10:00:00` as YAML reads it: the hour would go without a word.
        (datetime(2025, 1, 1, 10, 0), "must be a date (YYYY-MM-DD), not a date and time"),
    ],
)
def test_dates_must_be_calendar_dates(value: object, message: str) -> None:
    data = {**CONTRACT, "contract": {**CONTRACT["contract"], "effective": value}}
    assert errors_of(Contract, data) == [("contract.effective", message)]


def test_integers_and_booleans_are_not_coerced() -> None:
    data = {
        **CONTRACT,
        "terms": {"retention_days": True, "onward_transfer": "no", "max_records_per_day": 1.5},
    }
    assert errors_of(Contract, data) == [
        ("terms.retention_days", "Input should be a valid integer"),
        ("terms.onward_transfer", "Input should be a valid boolean"),
        ("terms.max_records_per_day", "Input should be a valid integer"),
    ]


def test_empty_purposes_and_routes() -> None:
    data = {**CONTRACT, "purposes": [], "routes": []}
    assert errors_of(Contract, data) == [
        ("purposes", "must not be empty"),
        ("routes", "must not be empty"),
    ]


@pytest.mark.parametrize(
    ("partner_id", "valid"),
    [
        ("acme-credit", True),
        ("a", True),
        ("9lives", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-acme", False),
        ("acme-", False),
        ("Acme", False),
        ("acme_credit", False),
        ("acme\n", False),
        ("", False),
    ],
)
def test_partner_id_pattern(partner_id: str, valid: bool) -> None:
    data = {**CONTRACT, "partner": {**CONTRACT["partner"], "id": partner_id}}
    if valid:
        assert Contract.model_validate(data).partner.id == partner_id
    else:
        assert errors_of(Contract, data) == [
            (
                "partner.id",
                f"{partner_id!r} must be 1-64 lower-case letters, digits and -, "
                "not starting or ending with -",
            )
        ]


def test_blank_names_are_refused() -> None:
    data = {
        **CONTRACT,
        "partner": {**CONTRACT["partner"], "name": "  "},
        "contract": {**CONTRACT["contract"], "pia_ref": ""},
    }
    assert errors_of(Contract, data) == [
        ("partner.name", "must not be empty"),
        ("contract.pia_ref", "must not be empty"),
    ]


def test_purpose_names() -> None:
    data = {**CONTRACT, "purposes": ["service_delivery", "Marketing"]}
    assert errors_of(Contract, data) == [("purposes.1", "'Marketing' must match [a-z][a-z0-9_]*")]


# --- upstream ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"type": "none"}, NoAuth(type="none")),
        (
            {"type": "basic", "username": "svc", "password_env": "ACME_PASSWORD"},
            BasicAuth(type="basic", username="svc", password_env="ACME_PASSWORD"),
        ),
        (
            {"type": "header", "name": "X-Api-Key", "value_env": "ACME_KEY"},
            HeaderAuth(type="header", name="X-Api-Key", value_env="ACME_KEY"),
        ),
    ],
)
def test_auth_forms(auth: dict[str, str], expected: object) -> None:
    upstream = Upstream.model_validate(
        {"base_url": "https://a.example", "location": "CN", "auth": auth}
    )
    assert upstream.auth == expected


@pytest.mark.parametrize(
    ("auth", "problems"),
    [
        (
            {"type": "oauth"},
            [
                (
                    "upstream.auth",
                    "Input tag 'oauth' found using 'type' does not match any of the expected "
                    "tags: 'none', 'bearer', 'basic', 'header'",
                )
            ],
        ),
        ({"type": "bearer"}, [("upstream.auth.token_env", "required")]),
        (
            {"type": "bearer", "token_env": "T", "token": "abc"},
            [("upstream.auth.token", "unknown key")],
        ),
        (
            {"type": "basic", "username": "u", "password_env": "1PASS"},
            [
                (
                    "upstream.auth.password_env",
                    "must be an environment variable name ([A-Z_][A-Z0-9_]*)",
                )
            ],
        ),
        (
            {"type": "basic", "username": "svc:1", "password_env": "P"},
            [
                (
                    "upstream.auth.username",
                    "must be non-empty, without ':' or control characters",
                )
            ],
        ),
        (
            {"type": "header", "name": "X-Key: cv_S3cr3t", "value_env": "K"},  # pasted whole
            [("upstream.auth.name", "is not a valid HTTP header name")],
        ),
    ],
)
def test_auth_errors(auth: dict[str, str], problems: list[tuple[str, str]]) -> None:
    data = {**CONTRACT, "upstream": {**CONTRACT["upstream"], "auth": auth}}
    assert errors_of(Contract, data) == problems


@pytest.mark.parametrize(
    "name", ["Host", "content-length", "Transfer-Encoding", "Connection", "X-Share-Id", "TE"]
)
def test_auth_header_may_not_be_gateway_or_hop_by_hop(name: str) -> None:
    data = {
        **CONTRACT,
        "upstream": {
            **CONTRACT["upstream"],
            "auth": {"type": "header", "name": name, "value_env": "K"},
        },
    }
    assert errors_of(Contract, data) == [
        (
            "upstream.auth.name",
            f"{name} is set by the gateway or the connection, not by upstream.auth",
        )
    ]


def test_auth_header_may_be_authorization() -> None:
    upstream = Upstream.model_validate(
        {
            "base_url": "https://a.example",
            "location": "CN",
            "auth": {"type": "header", "name": "Authorization", "value_env": "ACME_AUTH"},
        }
    )
    assert isinstance(upstream.auth, HeaderAuth)
    assert upstream.auth.name == "Authorization"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"location": "cn"},
            ("upstream.location", "'cn' must be an ISO 3166 country code (e.g. CN)"),
        ),
        (
            {"location": False},  # `location: NO` (Norway), unquoted
            (
                "upstream.location",
                'an unquoted country code YAML reads as true or false: quote it ("NO")',
            ),
        ),
        ({"timeout_s": 0}, ("upstream.timeout_s", "Input should be greater than 0")),
        ({"timeout_s": 301}, ("upstream.timeout_s", "Input should be less than or equal to 300")),
        ({"timeout_s": "10"}, ("upstream.timeout_s", "Input should be a valid number")),
        (
            {"reuse_connections": "no"},
            ("upstream.reuse_connections", "Input should be a valid boolean"),
        ),
    ],
)
def test_upstream_values(changes: dict[str, object], problem: tuple[str, str]) -> None:
    data = {**CONTRACT, "upstream": {**CONTRACT["upstream"], **changes}}
    assert errors_of(Contract, data) == [problem]


@pytest.mark.parametrize(
    ("section", "changes", "where"),
    [
        # Numbers the gateway could not use: every share would fail (500, or 503 at the log).
        ("terms", {"rate_limit_per_s": float("inf")}, "terms.rate_limit_per_s"),
        ("terms", {"rate_limit_per_s": 1e-320}, "terms.rate_limit_per_s"),
        ("terms", {"rate_limit_per_s": 2e6}, "terms.rate_limit_per_s"),
        ("terms", {"max_records_per_day": 2**63}, "terms.max_records_per_day"),
        # A daily cap of 0 records: the partner could never be sent anything.
        ("terms", {"max_records_per_day": 0}, "terms.max_records_per_day"),
        ("contract", {"version": 2**63}, "contract.version"),
        # Versions count from 1: a record of version 0 or below names no version agreed.
        ("contract", {"version": 0}, "contract.version"),
        ("contract", {"id": "DPA-\ud800"}, "contract.id"),
    ],
    ids=[
        "rate_inf",
        "rate_tiny",
        "rate_huge",
        "cap_huge",
        "cap_zero",
        "version_huge",
        "version_zero",
        "lone_surrogate",
    ],
)
def test_values_no_share_could_be_made_with_are_refused(
    section: str, changes: dict[str, object], where: str
) -> None:
    data = {**CONTRACT, section: {**CONTRACT[section], **changes}}
    assert [path for path, _ in errors_of(Contract, data)] == [where]


def test_a_bucket_wider_than_a_float_counts_exactly_is_refused() -> None:
    field = {"path": "a.income", "category": "financial.income"}
    with pytest.raises(ValidationError, match="less than or equal to 1000000000000000"):
        FieldRule.model_validate({**field, "transform": {"generalize": {"bucket": 2**1024}}})


@pytest.mark.parametrize(
    "text",
    [
        "retention_days: 030\n",
        "retention_days: 1:30\n",
        "retention_days: 0x1e\n",
        "retention_days: -017\n",
        "rate: 1:30.5\n",
    ],
)
def test_yaml_numbers_not_written_in_decimal_are_refused(text: str) -> None:
    # YAML 1.1 reads 030 as 24 and 1:30 as 90: the contract would say what nobody wrote.
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    [(_, message)] = caught.value.problems
    assert "decimal" in message


def test_yaml_numbers_in_decimal_still_read_as_numbers() -> None:
    assert load_yaml("a: 30\nb: 0\nc: -5\nd: 1_000\ne: 0.5\nf: 30.25\ng: '030'\n") == {
        "a": 30,
        "b": 0,
        "c": -5,
        "d": 1000,
        "e": 0.5,
        "f": 30.25,
        "g": "030",
    }


def test_timeout_may_be_written_as_an_integer() -> None:
    upstream = Upstream.model_validate(
        {"base_url": "https://a.example", "location": "CN", "timeout_s": 300}
    )
    assert upstream.timeout_s == 300.0


# --- transforms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "spec", "transform"),
    [
        ("hash", HashSpec(), Hash()),
        ("redact", RedactSpec(), Redact()),
        ({"mask": {"keep_last": 4}}, MaskSpec(keep_last=4), Mask(keep_first=0, keep_last=4)),
        (
            {"mask": {"keep_first": 3, "keep_last": 4}},
            MaskSpec(keep_first=3, keep_last=4),
            Mask(keep_first=3, keep_last=4),
        ),
        ({"mask": {}}, MaskSpec(), Mask(keep_first=0, keep_last=0)),
        ({"mask": None}, MaskSpec(), Mask(keep_first=0, keep_last=0)),
        ({"generalize": "year"}, GeneralizeSpec(), GeneralizeYear()),
        (
            {"generalize": {"bucket": 5000}},
            GeneralizeSpec(bucket=5000),
            GeneralizeBucket(size=5000),
        ),
    ],
)
def test_transform_forms(written: object, spec: object, transform: object) -> None:
    rule = FieldRule.model_validate(
        {"path": "a", "category": "identity.name", "transform": written}
    )
    assert rule.transform == spec
    assert rule.transform is not None
    assert to_transform(rule.transform) == transform
    # Dumped back the way the file writes it.
    dumped = rule.model_dump()["transform"]
    if isinstance(written, dict) and "mask" in written:
        assert dumped == {"mask": {"keep_first": 0, "keep_last": 0, **(written["mask"] or {})}}
    else:
        assert dumped == written
    assert FieldRule.model_validate(rule.model_dump()) == rule


def test_no_transform() -> None:
    rule = FieldRule.model_validate({"path": "a", "category": "identity.name"})
    assert rule.transform is None


def test_an_empty_response_filter_is_refused() -> None:
    # Read as "no response filter", the partner's whole answer reached the caller.
    route = yaml.safe_load("{method: POST, path: /v1/x, purpose: p, response: }")
    assert errors_of(Route, route) == [
        (
            "response",
            "empty: name the fields the caller may receive, or remove the key",
        )
    ]


def test_an_empty_transform_is_refused() -> None:
    # `transform:   # hash, once agreed` is YAML null: it read as "no transform", and the value
    # went out raw where the author had written a transform key.
    rule = yaml.safe_load("{path: a, category: identity.name, transform: }")
    assert errors_of(FieldRule, rule) == [
        ("transform", f"empty: write a transform ({FORMS}) or remove the key")
    ]


@pytest.mark.parametrize("key", ["rate_limit_per_s", "max_records_per_day"])
def test_an_empty_cap_is_refused(key: str) -> None:
    # `max_records_per_day:   # 10000 from Q3` is YAML null: it read as "no cap", and the
    # partner was sent records without limit where the author had written the cap's key.
    terms = yaml.safe_load(f"{{retention_days: 30, {key}: }}")
    assert errors_of(Terms, terms) == [(key, "empty: write the cap, or remove the key for none")]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (
            "birth_date",
            "empty: name the field that holds the subject's birth date, or remove the key",
        ),
        ("subject", "empty: name the field that identifies the data subject, or remove the key"),
        (
            "fields",
            "empty: list the fields the partner may receive, or remove the key (a route without "
            "fields forwards its body unchanged, with content_types)",
        ),
    ],
)
def test_an_empty_route_key_is_refused_not_read_as_absent(key: str, problem: str) -> None:
    # `birth_date:   # applicant.birth_date, once agreed` is YAML null: it read as no birth date,
    # and `minors: deny` could not act on the one the author meant; an empty `subject:` left
    # shares unfindable by an access request, an empty `fields:` forwarded the body as it came.
    route = yaml.safe_load(f"{{method: POST, path: /v1/x, purpose: p, {key}: }}")
    assert errors_of(Route, route) == [(key, problem)]


def test_records_may_be_written_null_as_the_specification_shows() -> None:
    # `records: null` is the specification's own spelling of "not a batch".
    route = yaml.safe_load("{method: POST, path: /v1/x, purpose: p, records: null, fields: []}")
    assert Route.model_validate(route).records is None


FORMS = "hash, redact, {mask: {keep_first: N, keep_last: N}} or {generalize: ...}"


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("encrypt", ("transform", f"unknown transform 'encrypt'; expected {FORMS}")),
        ("HASH", ("transform", f"unknown transform 'HASH'; expected {FORMS}")),
        ({"tokenize": {}}, ("transform", f"unknown transform 'tokenize'; expected {FORMS}")),
        ({"mask": {}, "generalize": "year"}, ("transform", f"a transform is one of {FORMS}")),
        (["hash"], ("transform", f"a transform is one of {FORMS}")),
        ({"mask": 4}, ("transform", "mask takes {keep_first: N, keep_last: N}")),
        (
            {"mask": {"keep_last": -1}},
            ("transform.mask.keep_last", "Input should be greater than or equal to 0"),
        ),
        (
            {"mask": {"keep_last": "4"}},
            ("transform.mask.keep_last", "Input should be a valid integer"),
        ),
        ({"mask": {"keep": 4}}, ("transform.mask.keep", "unknown key")),
        ({"mask": {"kind": "hash"}}, ("transform", "mask: unknown key 'kind'")),
        ({"generalize": "decade"}, ("transform", "generalize takes year or {bucket: N}")),
        ({"generalize": {}}, ("transform", "generalize takes year or {bucket: N}")),
        ({"generalize": {"bucket": None}}, ("transform", "generalize takes year or {bucket: N}")),
        (
            {"generalize": {"bucket": 1}},  # the exact value, recorded as transformed
            ("transform.generalize.bucket", "Input should be greater than or equal to 2"),
        ),
        ({"generalize": {"bucket": 10, "min": 0}}, ("transform.generalize.min", "unknown key")),
    ],
)
def test_transform_errors(written: object, problem: tuple[str, str]) -> None:
    data = {"path": "a", "category": "identity.name", "transform": written}
    assert errors_of(FieldRule, data) == [problem]


# --- routes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/v1/assess", "/v1/files/{file_id}", "/v1/{a}/{b}", "/a.b/c~d/e-f/_g", "/v1/..x"],
)
def test_valid_templates(path: str) -> None:
    assert Route.model_validate({"method": "GET", "path": path, "purpose": "p"}).path == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("v1/assess", "must start with /"),
        ("", "must start with /"),
        ("/v1/assess/", "must not end with /"),
        ("/v1//assess", "must not contain an empty segment (//)"),
        ("/v1/assess?x=1", "must not contain a query or fragment; name query parameters as fields"),
        ("/v1/assess#x", "must not contain a query or fragment; name query parameters as fields"),
        ("/v1/../admin", "must not contain . or .. segments"),
        ("/v1/./assess", "must not contain . or .. segments"),
        ("/v1/{File}", "placeholder {File} must be a whole segment named [a-z_][a-z0-9_]*"),
        ("/v1/{id", "placeholder {id must be a whole segment named [a-z_][a-z0-9_]*"),
        ("/v1/{}", "placeholder {} must be a whole segment named [a-z_][a-z0-9_]*"),
        (
            "/v1/f{id}",
            "placeholder f{id} must be a whole segment named [a-z_][a-z0-9_]*",
        ),
        (
            "/v1/a%2Fb",
            "segment 'a%2Fb' may only hold letters, digits and - . _ ~ or be a {name} placeholder",
        ),
        (
            "/v1/a;b",
            "segment 'a;b' may only hold letters, digits and - . _ ~ or be a {name} placeholder",
        ),
    ],
)
def test_invalid_templates(path: str, message: str) -> None:
    assert route_errors(path=path) == [("path", message)]


def test_method_is_upper_case() -> None:
    assert route_errors(method="post") == [
        ("method", "Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'")
    ]


def test_pull_routes_are_not_supported_yet() -> None:
    assert route_errors(direction="pull") == [
        ("direction", "pull routes are not supported yet; only push")
    ]
    assert route_errors(direction="sideways") == [("direction", "Input should be 'push'")]


def test_records_must_end_with_brackets() -> None:
    assert route_errors(records="applicants") == [
        ("records", "must name the array of records and end with [] (e.g. items[])")
    ]


@pytest.mark.parametrize(
    "value", ["application/PDF", "text/plain; charset=utf-8", "*/*", "pdf", "image/", "/png"]
)
def test_content_types(value: str) -> None:
    assert route_errors(content_types=["application/pdf", value]) == [
        (
            "content_types.1",
            f"{value!r} must be a lower-case type/subtype media type, without parameters",
        )
    ]


def test_content_types_not_empty_nor_repeated() -> None:
    assert route_errors(content_types=[]) == [("content_types", "must not be empty")]
    assert route_errors(content_types=["image/png", "image/png"]) == [
        ("content_types", "a content type is listed twice")
    ]


def test_content_types_with_structured_suffix() -> None:
    route = Route.model_validate(
        {
            "method": "PUT",
            "path": "/v1/x",
            "purpose": "p",
            "content_types": ["application/vnd.acme.report+xml", "image/svg+xml"],
        }
    )
    assert route.content_types == ("application/vnd.acme.report+xml", "image/svg+xml")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "Authorization",
            "Authorization carries the caller's credentials or address and is never forwarded",
        ),
        ("Cookie", "Cookie carries the caller's credentials or address and is never forwarded"),
        (
            "Forwarded",
            "Forwarded carries the caller's credentials or address and is never forwarded",
        ),
        (
            "X-Forwarded-For",
            "X-Forwarded-For carries the caller's credentials or address and is never forwarded",
        ),
        (
            "x-real-ip",
            "x-real-ip carries the caller's credentials or address and is never forwarded",
        ),
        (
            "X-Consent-Token",
            "X-Consent-Token carries the caller's credentials or address and is never forwarded",
        ),
        *(
            (name, f"{name} carries the caller's credentials or address and is never forwarded")
            for name in ("X-Original-Forwarded-For", "X-Originating-IP", "Fastly-Client-IP")
        ),
        ("Host", "Host is set by the gateway and cannot be passed through"),
        ("X-Share-Purpose", "X-Share-Purpose is set by the gateway and cannot be passed through"),
        (
            "X-Data-Retention-Days",
            "X-Data-Retention-Days is set by the gateway and cannot be passed through",
        ),
        ("Connection", "Connection is a hop-by-hop header and is never forwarded"),
        ("Upgrade", "Upgrade is a hop-by-hop header and is never forwarded"),
        (
            "Proxy-Authorization",
            "Proxy-Authorization is a hop-by-hop header and is never forwarded",
        ),
        ("X Bad", "'X Bad' is not a valid HTTP header name"),
        ("", "'' is not a valid HTTP header name"),
    ],
)
def test_route_headers_refused(name: str, message: str) -> None:
    data = {"content_types": ["text/plain"], "headers": ["X-Request-Id", name]}
    assert route_errors(**data) == [("headers.1", message)]


@pytest.mark.parametrize(("first", "second"), [("X-Trace", "x-trace"), ("x-trace", "X-Trace")])
def test_route_headers_listed_twice(first: str, second: str) -> None:
    assert route_errors(content_types=["text/plain"], headers=[first, second]) == [
        ("headers", f"{second} is listed twice")
    ]


# --- YAML -------------------------------------------------------------------------------------


def test_load_yaml_is_safe() -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml("a: !!python/object/apply:os.system ['true']\n")
    ((where, message),) = caught.value.problems
    assert where == ""
    assert message.startswith(
        "not valid YAML at line 1, column 4: could not determine a constructor"
    )


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("base_url: !!binary aHR0cHM6Ly9ldmlsLmV4YW1wbGU=\n", "binary"),
        ("purposes: !!set {credit_assessment}\n", "set"),
        ("purposes: !!omap [{credit_assessment: 1}]\n", "omap"),
        ("purposes: !!pairs [{credit_assessment: 1}]\n", "pairs"),
    ],
    ids=["binary", "set", "omap", "pairs"],
)
def test_types_beyond_the_core_ones_are_refused(text: str, tag: str) -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    [(where, message)] = caught.value.problems
    assert where == ""
    assert message == (
        f"not valid YAML at line 1, column {text.index('!') + 1}: the tag !!{tag} is not "
        "accepted: write the value itself (text, a number, a date, true/false, null, a list or "
        "a mapping)"
    )
    assert "aHR0" not in message
    assert "credit_assessment" not in message


def test_a_refused_tag_on_a_key_is_found_too() -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml("? !!binary aGk=\n: 1\n")
    assert "line 1, column 3: the tag !!binary is not accepted" in caught.value.problems[0][1]


def test_core_tags_written_out_are_accepted() -> None:
    text = (
        "a: !!int 3\nb: !!timestamp 2025-01-01\nc: !!str 1\nd: !!null ~\ne: !!seq [!!bool true]\n"
    )
    assert load_yaml(text) == {"a": 3, "b": date(2025, 1, 1), "c": "1", "d": None, "e": [True]}


def test_duplicate_keys_at_every_depth_are_reported_with_paths() -> None:
    text = "a: 1\nb:\n  - x: 1\n    x: 2\na: 3\n"
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert caught.value.problems == [
        ("b.0.x", "duplicate key 'x' (line 4; first on line 3)"),
        ("a", "duplicate key 'a' (line 5; first on line 1)"),
    ]


def test_keys_that_read_as_the_same_value_are_duplicates() -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml("on: 1\ntrue: 2\n")
    assert caught.value.problems == [("True", "duplicate key True (line 2; first on line 1)")]


def test_merge_keys_and_aliases_are_not_duplicates() -> None:
    text = "base: &base {a: 1, b: 2}\nthing:\n  <<: *base\n  b: 3\nother: *base\n"
    assert load_yaml(text) == {
        "base": {"a": 1, "b": 2},
        "thing": {"a": 1, "b": 3},
        "other": {"a": 1, "b": 2},
    }


def test_an_alias_to_a_single_value_is_that_value() -> None:
    # An anchor on a scalar closes with it: no end event follows to record what it counts.
    text = "timeout: &t 5\nupstream: {timeout_s: *t}\n"
    assert load_yaml(text) == {"timeout": 5, "upstream": {"timeout_s": 5}}


def test_two_merge_keys_in_one_mapping_are_refused() -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml("a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n")
    assert caught.value.problems == [
        ("c", "more than one merge key << (line 5): merge several with one `<<: [*a, *b]`")
    ]


def test_a_key_merged_from_two_mappings_is_refused() -> None:
    # YAML says the first mapping's value; PyYAML 6.0.x takes the last one's for any key longer
    # than one character: neither is what a reader of `<<: [*names, *phones]` expects.
    text = (
        "names: &names {fields: [name], x: 1}\n"
        "phones: &phones {fields: [phone], x: 2}\n"
        "route:\n"
        "  <<: [*names, *phones]\n"
        "  path: /v1/profile\n"
    )
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert caught.value.problems == [
        (
            f"route.{key}",
            f"key {key!r} is merged from more than one mapping (line 4 merges it from lines 1 "
            "and 2): write it in this mapping, or merge only one mapping that has it",
        )
        for key in ("fields", "x")
    ]


def test_a_key_merged_twice_through_nested_merges_is_refused() -> None:
    text = "a: &a {fields: 1}\nb: &b {<<: *a, y: 1}\nc: &c {fields: 2}\nd: {<<: [*b, *c]}\n"
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert [path for path, _ in caught.value.problems] == ["d.fields"]
    assert "from lines 1 and 3" in caught.value.problems[0][1]


def test_a_key_written_in_the_mapping_wins_over_merged_ones() -> None:
    # PyYAML puts merged pairs before the mapping's own, so its own keys win wherever `<<` is.
    text = (
        "a: &a {fields: 1, y: 1}\n"
        "b: &b {fields: 2, z: 2}\n"
        "after: {<<: [*a, *b], fields: 3}\n"
        "before: {fields: 4, <<: [*a, *b]}\n"
        "one: {<<: *a, fields: 5}\n"
    )
    assert load_yaml(text) == {
        "a": {"fields": 1, "y": 1},
        "b": {"fields": 2, "z": 2},
        "after": {"fields": 3, "y": 1, "z": 2},
        "before": {"fields": 4, "y": 1, "z": 2},
        "one": {"fields": 5, "y": 1},
    }


def test_a_key_merged_twice_with_one_value_is_not_a_collision() -> None:
    # One node reached through two merges, or the same scalar written twice: either way the
    # mapping reads the same whichever merge wins.
    text = (
        "a: &a {fields: [x]}\n"
        "b: &b {<<: *a, y: 1, method: POST}\n"
        "c: &c {<<: *a, z: 1, method: POST}\n"
        "d: {<<: [*b, *c]}\n"
    )
    assert load_yaml(text)["d"] == {  # type: ignore[index]
        "fields": ["x"],
        "y": 1,
        "z": 1,
        "method": "POST",
    }


def test_equal_looking_values_of_other_types_are_a_collision() -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml("a: &a {n: 1, m: [1]}\nb: &b {n: '1', m: [1]}\nc: {<<: [*a, *b]}\n")
    assert [path for path, _ in caught.value.problems] == ["c.n", "c.m"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("expires: 2027-02-30\n", "line 1, column 10: cannot read timestamp: day is out of range"),
        ("expires: 2027-13-01\n", "line 1, column 10: cannot read timestamp: month must be in"),
        ("n: !!int three\n", "line 1, column 4: cannot read int"),
        ("b: !!bool maybe\n", "line 1, column 4: cannot read bool"),
        ("? 2027-02-30\n: 1\n", "line 1, column 3: cannot read timestamp"),
    ],
)
def test_values_yaml_cannot_construct_are_problems_with_their_place(
    text: str, problem: str
) -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    [(path, message)] = caught.value.problems
    assert path == ""
    assert message.startswith(f"not valid YAML at {problem}")


SECRET = "Sup3rS3cret-0777"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"password: !!int {SECRET}\n", "line 1, column 11: cannot read int: invalid literal"),
        (f"password: !!float {SECRET}\n", "line 1, column 11: cannot read float: could not"),
        (f"password: !!bool {SECRET}\n", "line 1, column 11: cannot read bool"),
        (f"password: !!timestamp {SECRET}\n", "line 1, column 11: cannot read timestamp"),
        ("pin: 0777\n", "line 1, column 6: a number not written in decimal"),
        ("pin: 7:17\n", "line 1, column 6: a number not written in decimal"),
        ("pin: 7:17.5\n", "line 1, column 6: a base-60 number in YAML"),
        (f"password: {SECRET}\x07\n", "line 1, column 27: character #x0007 is not allowed"),
        (f"password: !!binary {SECRET}\n", "line 1, column 11: the tag !!binary is not"),
        (f"a: {{password: {SECRET}\n", "line 2, column 1: expected ',' or '}', but got"),
        (f"token_env: *{SECRET}\n", "line 1, column 12: found undefined alias '…'"),
        (f"token_env: !sk'{SECRET} x\n", "line 1, column 12: could not determine a constructor"),
        (f"token_env: !{SECRET} x\n", "line 1, column 12: could not determine a constructor"),
    ],
)
def test_a_yaml_problem_says_where_never_what_the_value_is(text: str, problem: str) -> None:
    # Problems reach the reload log and the admin API's answer: a secret pasted into the wrong
    # key must not travel with them. PyYAML's own marks quote the line; they are not used.
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    [(_, message)] = caught.value.problems
    assert message.startswith(f"not valid YAML at {problem}")
    assert "\n" not in message
    for fragment in (SECRET.casefold(), "0777", "7:17"):
        assert fragment not in message.casefold()


@pytest.mark.parametrize(
    ("text", "read"),
    [
        # SPEC.md's own spelling: YAML ends the scalar at `[`, leaving `[]` as a syntax error.
        ("fields: [{path: reasons[].code}]\n", {"fields": [{"path": "reasons[].code"}]}),
        ("f: {path: m[][].v, k: 1}\n", {"f": {"path": "m[][].v", "k": 1}}),
        ("f: [a[], b[]]\n", {"f": ["a[]", "b[]"]}),
        ("f: {a[]: b}\n", {"f": {"a[]": "b"}}),
        ("f: {p: a[]\n  , q: 2}\n", {"f": {"p": "a[]", "q": 2}}),
        # Outside {...} and [...] YAML reads brackets in a plain scalar already.
        ("path: items[].id\n", {"path": "items[].id"}),
        ("f: {p: [], q: [a]}\n", {"f": {"p": [], "q": ["a"]}}),
    ],
)
def test_a_path_with_brackets_reads_as_one_word_inside_flow_collections(
    text: str, read: object
) -> None:
    assert load_yaml(text) == read


HINT = ' (inside {...} write a path as one word, or quote it: {path: "items[].id"})'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fields: [{path: items[0].id}]\n", "column 22: expected ',' or '}', but got '['" + HINT),
        ("f: {path: a[] .b}\n", "column 15: expected ',' or '}', but got '<scalar>'"),
        # `#` right after `[]` would start a comment only inside {...}: not guessed at.
        ("f: {path: a[]#x}\n", "column 12: expected ',' or '}', but got '['" + HINT),
        # No path holds a space: `[ ]` is not read as `[]`.
        ("f: {path: a[ ].b}\n", "column 12: expected ',' or '}', but got '['" + HINT),
        ("f: {path: a]}\n", "column 12: expected ',' or '}', but got ']'" + HINT),
    ],
)
def test_other_brackets_in_flow_mappings_are_refused(text: str, problem: str) -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert caught.value.problems == [("", f"not valid YAML at line 1, {problem}")]


def test_aliases_standing_for_more_than_max_nodes_values_are_refused() -> None:
    # Under 300 bytes; written out, about 10**6 values, each a schema check and a problem line.
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
        for previous, name in zip("abcde", "bcdef", strict=True)
    )
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert caught.value.problems == [
        (
            "",
            # The eighth `*d` on line 5 brings the count to 101,239.
            "more than 100000 values, counting each alias as the value it stands for (reached "
            "at line 5, column 36): a contract or the settings file needs far fewer",
        )
    ]


def test_the_value_cap_refuses_a_file_as_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # A MiB of values took seconds to parse before the count began; nothing after the value
    # that passes the cap is read, not even the bracket left open at the end.
    monkeypatch.setattr(yamlfile, "MAX_NODES", 1000)
    text = "k:\n" + "- 1\n" * 5000 + "j: [\n"
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    # The mapping, `k` and the list: the 998th item (line 999) is the 1001st value.
    assert caught.value.problems == [
        (
            "",
            "more than 1000 values, counting each alias as the value it stands for (reached at "
            "line 999, column 3): a contract or the settings file needs far fewer",
        )
    ]


def test_counting_the_values_leaves_the_nesting_a_file_may_have() -> None:
    # The values are counted as each event is taken, not with a frame more for each level.
    text = "".join("  " * level + "a:\n" for level in range(400)) + "  " * 400 + "1\n"
    document = load_yaml(text)
    for _ in range(400):
        assert isinstance(document, dict)
        document = document["a"]
    assert document == 1


def test_the_value_cap_counts_each_alias_as_what_it_stands_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mapping; `a`, its list and two items; `b`, its list and two lists of three: 13.
    text = "a: &a [1, 2]\nb: [*a, *a]\n"
    monkeypatch.setattr(yamlfile, "MAX_NODES", 13)
    assert load_yaml(text) == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
    # A merge key and what it merges count too: the mapping, `<<` and the three of `*m`.
    merged = "a: &m {x: 1}\nb: {<<: *m}\n"
    monkeypatch.setattr(yamlfile, "MAX_NODES", 11)
    assert load_yaml(merged) == {"a": {"x": 1}, "b": {"x": 1}}
    monkeypatch.setattr(yamlfile, "MAX_NODES", 10)
    with pytest.raises(YamlFileError) as caught:
        load_yaml(merged)
    assert caught.value.problems[0][1].startswith("more than 10 values")
    monkeypatch.setattr(yamlfile, "MAX_NODES", 12)
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert caught.value.problems == [
        (
            "",
            "more than 12 values, counting each alias as the value it stands for (reached at "
            "line 2, column 9): a contract or the settings file needs far fewer",
        )
    ]


def test_the_value_cap_counts_values_written_out_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlfile, "MAX_NODES", 13)
    # The mapping, its key, the list and its ten items: 13.
    assert load_yaml("a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n") == {"a": list(range(1, 11))}
    with pytest.raises(YamlFileError) as caught:
        load_yaml("a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n")
    assert caught.value.problems[0][1].startswith("more than 13 values")


def test_flow_collections_nested_past_max_flow_depth_are_refused_as_they_are_read() -> None:
    # PyYAML's scanner looks at every open bracket once per token: nested a few hundred deep, a
    # line of a few hundred bytes took a fraction of a second, and a file of such lines minutes.
    depth = 16  # yamlfile.MAX_FLOW_DEPTH
    assert load_yaml(f"a: {'[' * depth}{']' * depth}\n") is not None
    assert load_yaml(f"a: {'{a: ' * (depth - 1)}{{}}{'}' * (depth - 1)}\n") is not None
    # Refused at the bracket one too deep: after `a: ` and `depth` brackets (or `{a: `s).
    for text, column in (
        (f"a: {'[' * 300}{']' * 300}\n", 3 + depth + 1),
        (f"a: {'{a: ' * 300}1{'}' * 300}\n", 3 + 4 * depth + 1),
    ):
        with pytest.raises(YamlFileError) as caught:
            load_yaml(text)
        assert caught.value.problems == [
            (
                "",
                f"not valid YAML at line 1, column {column}: "
                f"[...] and {{...}} nested more than {depth} deep: "
                "a contract or the settings file needs a few levels",
            )
        ]


def test_block_collections_nested_past_the_parsers_stack_are_one_problem() -> None:
    # `- - - ... x`: block nesting has no bracket to count, and the composer recurses per level.
    with pytest.raises(YamlFileError) as caught:
        load_yaml("- " * 2000 + "x\n")
    assert caught.value.problems == [("", "not valid YAML: nested too deeply")]


@pytest.mark.parametrize(
    "text",
    ["a: &a [*a]\n", "a: &m {x: 1, self: *m}\n", "a: &m {<<: *m}\n", "&r [1, [2, *r]]\n"],
)
def test_a_value_containing_itself_is_refused(text: str) -> None:
    with pytest.raises(YamlFileError) as caught:
        load_yaml(text)
    assert caught.value.problems == [
        (
            "",
            "the value at line 1 contains itself through an alias: "
            "no contract or settings file is recursive",
        )
    ]


def test_a_file_over_max_file_bytes_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (yamlfile.MAX_FILE_BYTES - 5))
    assert read_yaml_file(path)[0] == {"a": 1}  # exactly the limit
    with path.open("ab") as stream:
        stream.write(b"#")
    with pytest.raises(YamlFileError) as caught:
        read_yaml_file(path)
    assert caught.value.problems == [
        ("", "larger than 1048576 bytes (1 MiB): a contract or the settings file is a few KB")
    ]


def test_read_yaml_file_returns_document_and_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    raw = "\ufeffname: 公司\n".encode()
    path.write_bytes(raw)
    assert read_yaml_file(path) == ({"name": "公司"}, raw)


def test_read_yaml_file_refuses_other_encodings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes("name: 公司\n".encode("utf-16"))
    with pytest.raises(YamlFileError) as caught:
        read_yaml_file(path)
    assert caught.value.problems == [("", "not valid UTF-8 (byte 0xff at offset 0)")]


def test_a_fifo_put_in_place_after_the_check_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    regular = tmp_path / "regular.yaml"
    regular.write_text("a: 1\n", encoding="utf-8")
    path = tmp_path / "c.yaml"
    os.mkfifo(path)
    real_stat = os.stat
    # The check before opening sees the regular file that was there a moment before.
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: real_stat(regular if p == path else p))
    with pytest.raises(YamlFileError) as caught:
        read_yaml_file(path)  # no writer: a blocking open or read would never return
    assert caught.value.problems == [("", "not a regular file but a FIFO: nothing was read")]


CHANGED = (
    "the file changed while it was read; replace contract files by renaming a complete file "
    "into place"
)


def read_while(
    monkeypatch: pytest.MonkeyPatch, *changes: Callable[[], object]
) -> Callable[[], int]:
    """Make the n-th read of a file first apply `changes[n]`, as a writer at work would; return
    how many reads there were."""
    real = yamlfile._read_fd
    reads: list[int] = []

    def read(fd: int, limit: int) -> bytes:
        if len(reads) < len(changes):
            changes[len(reads)]()
        reads.append(fd)
        return real(fd, limit)

    monkeypatch.setattr(yamlfile, "_read_fd", read)
    monkeypatch.setattr(yamlfile, "READ_RETRY_PAUSE_S", 0.001)
    return lambda: len(reads)


def test_a_file_rewritten_in_place_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    whole = "routes:\n  - path: /a\n    response: {fields: [{path: score}]}\n"
    path.write_text(whole, encoding="utf-8")
    torn = whole[: whole.index("    response")]
    assert load_yaml(torn) == {"routes": [{"path": "/a"}]}  # what a torn read would accept

    def truncate_and_write_half() -> None:
        with path.open("w", encoding="utf-8") as stream:
            stream.write(torn)

    def write_the_rest() -> None:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(whole[len(torn) :])

    reads = read_while(monkeypatch, truncate_and_write_half, write_the_rest)
    assert read_yaml_file(path) == (load_yaml(whole), whole.encode())
    assert reads() == 3  # the torn read, one that saw the file grow, one that saw it still


def test_a_file_touched_or_replaced_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\n", encoding="utf-8")
    renamed = tmp_path / "new.yaml"
    renamed.write_text("version: 2\n", encoding="utf-8")

    def touch() -> None:  # same size, another modification time
        status = path.stat()
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))

    reads = read_while(monkeypatch, touch, lambda: renamed.replace(path))
    assert read_yaml_file(path)[0] == {"version": 2}
    assert reads() == 3


def test_a_file_rewritten_with_its_modification_time_set_back_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `cp -p` or `touch -r` leave it, or a write within the file system's timestamp tick:
    # only the change time tells.
    path = tmp_path / "c.yaml"
    path.write_text("old: 1\nend: 1\n", encoding="utf-8")
    mtime = path.stat().st_mtime_ns

    def rewriter(text: str) -> Callable[[], None]:
        def rewrite() -> None:
            with path.open("r+", encoding="utf-8") as stream:
                stream.write(text)
            os.utime(path, ns=(mtime, mtime))

        return rewrite

    # Half of the new version first, the rest in the next write: the same size throughout.
    reads = read_while(monkeypatch, rewriter("new: 2\n"), rewriter("new: 2\nend: 2\n"))
    assert read_yaml_file(path)[0] == {"new": 2, "end": 2}
    assert reads() == 3


def test_a_file_that_keeps_changing_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n", encoding="utf-8")

    def append() -> None:
        with path.open("a", encoding="utf-8") as stream:
            stream.write("#\n")

    reads = read_while(monkeypatch, *[append] * 10)
    with pytest.raises(YamlFileError) as caught:
        read_yaml_file(path)
    assert caught.value.problems == [("", CHANGED)]
    assert reads() == yamlfile.READ_ATTEMPTS == 3


def test_a_file_grown_past_the_limit_while_read_is_refused_after_one_byte_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    real = yamlfile._read_fd
    read: list[int] = []

    def grow_then_read(fd: int, limit: int) -> bytes:
        os.truncate(path, 4 * yamlfile.MAX_FILE_BYTES)  # after the size was checked
        raw = real(fd, limit)
        read.append(len(raw))
        return raw

    monkeypatch.setattr(yamlfile, "_read_fd", grow_then_read)
    with pytest.raises(YamlFileError) as caught:
        read_yaml_file(path)
    assert caught.value.problems == [
        ("", "larger than 1048576 bytes (1 MiB): a contract or the settings file is a few KB")
    ]
    assert read == [yamlfile.MAX_FILE_BYTES + 1]  # not the whole file, whatever it grew to


def test_read_yaml_file_reports_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(YamlFileError) as caught:
        read_yaml_file(tmp_path / "missing.yaml")
    assert caught.value.problems == [("", "cannot read: No such file or directory")]
