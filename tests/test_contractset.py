from __future__ import annotations

import copy
import hashlib
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import stopped_clock
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import contractset as contractset_module
from gateway import yamlfile
from gateway.contract import Contract, Route
from gateway.contractset import (
    ContractSet,
    Problem,
    contract_files,
    contract_warnings,
    load_contract_set,
    validate_contract,
)
from gateway.routing import Template
from gateway.settings import Settings
from gateway.taxonomy import BUILTIN_TAXONOMY, Taxonomy, load_taxonomy

BUNDLED = Path(__file__).resolve().parent.parent / "contracts"


def minimal() -> dict[str, Any]:
    """The smallest valid contract; each test breaks exactly one thing in a copy."""
    return copy.deepcopy(
        {
            "partner": {
                "id": "acme",
                "name": "ACME Co.",
                "kind": "other",
                "relationship": "entrusted",
            },
            "contract": {
                "id": "DPA-1",
                "version": 1,
                "effective": "2025-01-01",
                "expires": "2027-12-31",
                "status": "active",
                "pia_ref": "PIA-1",
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
                    "subject": "user_id",
                    "fields": [{"path": "name", "category": "identity.name"}],
                }
            ],
        }
    )


def route(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "method": "POST",
        "path": "/v1/things",
        "purpose": "service_delivery",
        "fields": [{"path": "name", "category": "identity.name"}],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def write(directory: Path, name: str, data: object) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def lines(
    directory: Path, data: dict[str, Any], settings: Settings | None = None
) -> tuple[str, list[str]]:
    """Write `data` as the only contract and return its file name and every problem line."""
    file = str(write(directory, "acme.yaml", data))
    contract_set, problems = load_contract_set(directory, settings or Settings())
    assert (contract_set is None) == bool(problems)
    return file, [str(problem) for problem in problems]


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        # A key or value of the file goes into a problem as it is: a line break split the
        # problem in two, an escape sequence reached the terminal, a lone surrogate could not be
        # printed (a traceback).
        (lambda d: d.update({"note\nacme.yaml: all good": 1}), "note\\nacme.yaml: all good"),
        (lambda d: d["partner"].update({"\x1b[2Jx": 1}), "partner.\\x1b[2Jx: unknown key"),
        (lambda d: d["upstream"].update({"auth": {"type": "x\u2028y"}}), "x\\u2028y"),
        (lambda d: d["routes"][0].update({"subject": "path.\ud800"}), "path.\\ud800 names"),
    ],
)
def test_a_problem_is_one_printable_line_whatever_the_file_holds(
    tmp_path: Path, change: Any, shown: str
) -> None:
    data = minimal()
    change(data)
    _, found = lines(tmp_path, data)
    assert found
    for line in found:
        assert line.isprintable(), line
        line.encode("utf-8")
    assert any(shown in line for line in found), found


@pytest.mark.parametrize("denied", ["iterdir", "open"])
def test_a_folder_or_file_it_may_not_read_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, denied: str
) -> None:
    write(tmp_path, "acme.yaml", minimal())

    def refuse(self: Path, *args: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    if denied == "iterdir":
        monkeypatch.setattr(Path, denied, refuse)
    else:  # not by file modes: they do not stop root, which the tests may run as
        monkeypatch.setattr(os, "open", refuse)
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    [problem] = problems
    assert "cannot read: Permission denied" in str(problem)


def test_minimal_contract_is_valid(tmp_path: Path) -> None:
    _, found = lines(tmp_path, minimal())
    assert found == []


def test_loaded_set_holds_contract_and_sha256_of_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", minimal())
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert problems == []
    assert isinstance(contract_set, ContractSet)
    loaded = contract_set.contracts["acme"]
    assert loaded.file == path
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.contract.partner.name == "ACME Co."
    assert contract_set.taxonomy == BUILTIN_TAXONOMY


def test_sha256_changes_with_any_byte_even_a_comment(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", minimal())
    first, _ = load_contract_set(tmp_path, Settings())
    path.write_bytes(path.read_bytes() + b"# reviewed 2025-02-01\n")
    second, _ = load_contract_set(tmp_path, Settings())
    assert first is not None
    assert second is not None
    before = first.contracts["acme"].sha256
    after = second.contracts["acme"].sha256
    assert before != after
    assert after == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_contracts_load_without_problems() -> None:
    contract_set, problems = load_contract_set(BUNDLED, Settings())
    assert [str(p) for p in problems] == []
    assert contract_set is not None
    assert sorted(contract_set.contracts) == ["acme-credit", "cloudvault", "fixit"]
    acme = contract_set.contracts["acme-credit"].contract
    assert acme.partner.relationship == "third_party"
    assert acme.terms.sensitive.allowed == ("identity.id_number",)
    assert [r.path for r in acme.routes] == ["/v1/assess", "/v1/assess/batch"]
    assert acme.routes[1].records == "applicants[]"


def test_bundled_contracts_are_in_force_on_2026_11_30() -> None:
    contract_set, _ = load_contract_set(BUNDLED, Settings())
    assert contract_set is not None
    for loaded in contract_set.contracts.values():
        info = loaded.contract.contract
        assert info.status == "active"
        assert str(info.effective) < "2026-11-30" < str(info.expires)


# --- rule 1: unknown keys and schema errors ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("a" + ".b" * 999, "'a.b.b.b"),
        ("a" + "[]" * 999, "'a[][][]"),
        ("subject.b.c", None),
        ("a" + ".b" * 254, "'a.b.b.b"),
    ],
    ids=["keys", "arrays", "subject", "one_too_many"],
)
def test_a_field_path_deeper_than_any_body_is_one_problem(
    tmp_path: Path, path: str, shown: str | None
) -> None:
    # Compiled one stack frame after another, such a path stopped the load with a RecursionError.
    data = minimal()
    if shown is None:  # the route's subject path, deep as well
        data["routes"][0]["subject"] = "a" + ".b" * 999
    else:
        data["routes"][0]["fields"].append({"path": path, "category": "business.note"})
    file, problems = lines(tmp_path, data)
    [problem] = problems
    where = "routes.0.subject" if shown is None else "routes.0.fields.1.path"
    assert problem.startswith(f"{file}: {where}: field path 'a.b.b") or problem.startswith(
        f"{file}: {where}: field path {shown}"
    ), problem
    assert "has more than 254 segments: no body the gateway reads is that deep" in problem
    assert len(problem) < len(file) + 200  # the path is not echoed whole


def test_a_field_path_as_deep_as_a_body_may_be_is_valid(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"].append({"path": "a" + ".b" * 253, "category": "business.note"})
    data["routes"][0]["fields"].append({"path": "c" + "[]" * 253, "category": "business.note"})
    assert lines(tmp_path, data)[1] == []


def test_unknown_key_is_reported_at_its_path(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"][0]["categroy"] = "identity.name"
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: routes.0.fields.0.categroy: unknown key"]


def test_schema_errors_are_all_reported_with_their_paths(tmp_path: Path) -> None:
    data = minimal()
    data["contract"]["version"] = "three"
    data["terms"]["retention_days"] = -1
    del data["upstream"]["location"]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.version: Input should be a valid integer",
        f"{file}: upstream.location: required",
        f"{file}: terms.retention_days: Input should be greater than or equal to 0",
    ]


def test_auth_errors_are_located_without_the_union_tag(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["auth"] = {"type": "bearer", "token_env": "acme_token"}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: upstream.auth.token_env: must be an environment variable name ([A-Z_][A-Z0-9_]*)"
    ]


def test_a_secret_pasted_into_a_credential_field_is_not_echoed(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["auth"] = {"type": "basic", "username": "svc:S3cret!", "password_env": "P"}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: upstream.auth.username: must be non-empty, without ':' or control characters"
    ]
    data["upstream"]["auth"] = {"type": "bearer", "token_env": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: upstream.auth.token_env: must be an environment variable name ([A-Z_][A-Z0-9_]*)"
    ]


@pytest.mark.parametrize(
    ("auth", "key", "settings"),
    [
        ({"type": "bearer", "token_env": "SHARE_GATEWAY_HASH_KEY"}, "token_env", Settings()),
        (
            {"type": "basic", "username": "u", "password_env": "SHARE_GATEWAY_X"},
            "password_env",
            Settings(),
        ),
        (
            {"type": "header", "name": "X-Key", "value_env": "MY_HASH_KEY"},
            "value_env",
            Settings.model_validate({"secrets": {"hash_key_env": "MY_HASH_KEY"}}),
        ),
        (
            {"type": "bearer", "token_env": "IDP_SECRET"},
            "token_env",
            Settings.model_validate(
                {
                    "auth": {
                        "issuer": "i",
                        "audience": "a",
                        "algorithms": ["HS256"],
                        "hs256_secret_env": "IDP_SECRET",
                    }
                }
            ),
        ),
    ],
)
def test_a_partner_credential_may_not_be_one_of_the_gateways_own_secrets(
    tmp_path: Path, auth: dict[str, str], key: str, settings: Settings
) -> None:
    data = minimal()
    data["upstream"]["auth"] = auth
    file, found = lines(tmp_path, data, settings)
    assert found == [
        f"{file}: upstream.auth.{key}: names a variable the gateway keeps for its own settings "
        "and keys: a partner's credential needs a variable of its own"
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    _, problems = load_contract_set(tmp_path, Settings())
    assert [str(p) for p in problems] == [f"{path}: the top level must be a mapping"]


# --- rule 2: route purposes -------------------------------------------------------------------


def test_route_purpose_must_be_an_approved_purpose(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["purpose"] = "marketing"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.purpose: 'marketing' is not one of purposes (service_delivery)"
    ]


def test_duplicate_purposes(tmp_path: Path) -> None:
    data = minimal()
    data["purposes"] = ["service_delivery", "service_delivery"]
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: purposes.1: duplicate purpose 'service_delivery' (also purposes.0)"]


# --- rule 3: field categories the taxonomy does not know --------------------------------------


def test_field_category_unknown_to_the_taxonomy(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"][0]["category"] = "identity.shoe_size"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.0.category: unknown data category 'identity.shoe_size'"
    ]


# --- rule 4: the approved data scope ----------------------------------------------------------


def test_field_category_outside_the_approved_scope(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"].append({"path": "phone", "category": "contact.phone"})
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.1.category: contact.phone is not in categories "
        "(the approved data scope)"
    ]


def test_business_categories_need_no_place_in_scope(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"].append({"path": "amount", "category": "business.transaction"})
    _, found = lines(tmp_path, data)
    assert found == []


def test_scope_category_unknown_to_the_taxonomy(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("contact.pager")
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: categories.1: unknown data category 'contact.pager'"]


def test_duplicate_scope_category(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("identity.name")
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: categories.1: duplicate category 'identity.name' (also categories.0)"
    ]


# --- rule 5: sensitive categories -------------------------------------------------------------


def test_sensitive_scope_category_must_be_allowed(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("health.record")
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: categories.1: health.record is sensitive personal information: "
        "it must be listed in terms.sensitive.allowed"
    ]


def test_sensitive_field_category_outside_scope_reports_both(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"].append({"path": "face", "category": "biometric.face"})
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.1.category: biometric.face is not in categories "
        "(the approved data scope)",
        f"{file}: routes.0.fields.1.category: biometric.face is sensitive personal information: "
        "it must be listed in terms.sensitive.allowed",
    ]


def test_sensitive_category_in_scope_and_allowed_is_valid(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("health.record")
    data["terms"]["sensitive"] = {"allowed": ["health.record"]}
    data["routes"][0]["fields"].append({"path": "diagnosis", "category": "health.record"})
    _, found = lines(tmp_path, data)
    assert found == []


def test_allowed_entry_must_be_sensitive(tmp_path: Path) -> None:
    data = minimal()
    data["terms"]["sensitive"] = {"allowed": ["identity.name"]}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: terms.sensitive.allowed.0: identity.name is not a sensitive category"
    ]


def test_allowed_entry_must_be_in_scope(tmp_path: Path) -> None:
    data = minimal()
    data["terms"]["sensitive"] = {"allowed": ["identity.id_number"]}
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: terms.sensitive.allowed.0: identity.id_number is not in categories"]


# --- rule 6: never shareable ------------------------------------------------------------------


def test_password_may_never_be_shared_even_hashed(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("account.password")
    data["routes"][0]["fields"].append(
        {"path": "password", "category": "account.password", "transform": "hash"}
    )
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: categories.1: account.password may never be shared, not even hashed",
        f"{file}: routes.0.fields.1.category: account.password may never be shared, "
        "not even hashed",
    ]


def test_password_may_not_be_listed_as_allowed_sensitive(tmp_path: Path) -> None:
    data = minimal()
    data["terms"]["sensitive"] = {"allowed": ["account.password"]}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: terms.sensitive.allowed.0: account.password may never be shared, not even hashed"
    ]


# --- rule 7: upstream URL ---------------------------------------------------------------------


def test_http_upstream_is_refused_by_default(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["base_url"] = "http://api.acme.example"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: upstream.base_url: http:// upstreams are only allowed with "
        "allow_insecure_upstreams: true (development); use https://"
    ]


def test_http_upstream_is_allowed_for_development(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["base_url"] = "http://127.0.0.1:8081"
    _, found = lines(tmp_path, data, Settings(allow_insecure_upstreams=True))
    assert found == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.acme.example", "must be an absolute https:// URL"),
        ("api.acme.example/v1", "must be an absolute https:// URL"),
        ("https:///v1", "must name a host"),
        (
            "https://user:secret@api.acme.example",
            "must not contain user info (credentials belong in upstream.auth)",
        ),
        ("https://api.acme.example/v1?key=1", "must not contain a query"),
        ("https://api.acme.example/v1?", "must not contain a query"),
        ("https://api.acme.example/#top", "must not contain a fragment"),
        ("https://api.acme.example:99999", "not a valid URL: Port out of range 0-65535"),
        ("https://api.acme.example:0/v1", "port 0 is not a valid port"),
        ("https://api.acme .example", "must not contain whitespace or control characters"),
        ("https://[::1]x/v1", "must be scheme://host[:port] followed by a path"),
        *(
            (
                f"https://{host}/v1",
                "the host is not a valid DNS name (an empty label, a label over 63 characters, "
                "or characters IDNA cannot encode)",
            )
            for host in ("api..acme.example", "a" * 64 + ".acme.example", ".acme.example")
        ),
        *(
            (
                f"https://api.acme.example{path}",
                "the path must not hold dot-segments, ';', '\\' or an encoded '/', '\\' or '.'",
            )
            for path in ("/v1/../admin", "/./v1", "/v1/%2Fadmin", "/v1/%2e%2e/x", "/v1;x", "/a%5Cb")
        ),
        *(
            (
                f"https://api.acme.example{path}",
                "the path must be ASCII: percent-encode other characters (ü is %C3%BC)",
            )
            for path in ("/bücher", "/v1/\ud800", "/v1/é")
        ),
    ],
)
def test_base_url_must_be_absolute_https_with_host_only(
    tmp_path: Path, url: str, message: str
) -> None:
    data = minimal()
    data["upstream"]["base_url"] = url
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: upstream.base_url: {message}"]


@pytest.mark.parametrize(
    "url",
    [
        "https://api.acme.example:8443/partner-api",
        "https://" + "a" * 63 + ".acme.example",  # the longest label DNS allows
        "https://bücher.example",  # an internationalised name the resolver encodes
        "https://api.acme.example.",  # fully qualified
        "https://[2001:db8::1]:8443",
    ],
)
def test_base_url_may_carry_a_port_and_base_path(tmp_path: Path, url: str) -> None:
    data = minimal()
    data["upstream"]["base_url"] = url
    _, found = lines(tmp_path, data)
    assert found == []


# --- rule 8: duplicate partner ids ------------------------------------------------------------


def test_duplicate_partner_ids_name_both_files(tmp_path: Path) -> None:
    later = write(tmp_path, "acme.yaml", minimal())
    earlier = write(tmp_path, "acme-again.yml", minimal())
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    # Files are read in sorted order: `acme-again.yml` comes first.
    assert [str(p) for p in problems] == [
        f"{later}: partner.id: duplicate partner id 'acme' (also in {earlier})"
    ]


# --- rule 9: validity dates -------------------------------------------------------------------


def test_expires_before_effective(tmp_path: Path) -> None:
    data = minimal()
    data["contract"]["expires"] = "2024-12-31"
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: contract.expires: 2024-12-31 is before effective 2025-01-01"]


def test_one_day_contract_is_valid(tmp_path: Path) -> None:
    data = minimal()
    data["contract"]["expires"] = "2025-01-01"
    _, found = lines(tmp_path, data)
    assert found == []


# --- rule 10: third parties -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "fields", "where"),
    [
        ("GET", None, "query. or path."),
        # SPEC.md's upload route: it has no JSON body to name the subject in.
        ("PUT", None, "query. or path."),
        ("POST", [{"path": "name", "category": "identity.name"}], "a body path, query. or path."),
    ],
)
def test_a_third_party_route_names_its_subject(
    tmp_path: Path, method: str, fields: list[dict[str, str]] | None, where: str
) -> None:
    # Each share to a third party needs its subject's consent: a route without one could only
    # ever be refused.
    data = minimal()
    data["partner"]["relationship"] = "third_party"
    extra = route(method=method, path="/v1/reports/{report_id}", fields=fields)
    if fields is None and method == "PUT":
        extra["content_types"] = ["application/pdf"]
    data["routes"].append(extra)
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1.subject: required for a third_party partner: each share needs its "
        f"data subject's consent; name it with {where}"
    ]


def test_a_route_sending_sensitive_data_under_consent_names_its_subject(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("health.record")
    data["terms"]["sensitive"] = {"allowed": ["health.record"], "consent_required": True}
    data["routes"][0]["fields"].append({"path": "diagnosis", "category": "health.record"})
    del data["routes"][0]["subject"]
    data["routes"].append(route(path="/v1/names"))  # no sensitive field: no consent needed
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.subject: required to send health.record: sensitive data needs its "
        "data subject's consent (terms.sensitive.consent_required)"
    ]
    data["terms"]["sensitive"]["consent_required"] = False
    assert lines(tmp_path, data)[1] == []


def test_an_upload_route_names_its_subject_where_sensitive_data_needs_consent(
    tmp_path: Path,
) -> None:
    data = minimal()
    data["categories"].append("health.record")
    data["terms"]["sensitive"] = {"allowed": ["health.record"], "consent_required": True}
    upload = route(method="PUT", path="/v1/files/{file_id}", fields=None)
    upload["content_types"] = ["application/pdf"]
    data["routes"] += [upload, route(method="GET", path="/v1/files/{file_id}", fields=None)]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1.subject: required for a route without fields: an upload may hold "
        "any sensitive category the contract names (health.record), which needs its data "
        "subject's consent (terms.sensitive.consent_required); name it with query. or path."
    ]
    upload["subject"] = "query.user_id"
    assert lines(tmp_path, data)[1] == []
    del upload["subject"]
    data["terms"]["sensitive"]["consent_required"] = False
    assert lines(tmp_path, data)[1] == []


def _consent_for(data: dict[str, Any], category: str) -> None:
    data["categories"].append(category)
    data["terms"]["sensitive"] = {"allowed": [category], "consent_required": True}


def _outside(file: str, index: int, field: int, category: str, scope: str, subject: str) -> str:
    return (
        f"{file}: routes.{index}.fields.{field}.path: {category} outside {scope}, where the data "
        f"subject ({subject}) is: it may be someone else's, whose consent no share can show"
    )


def test_data_needing_consent_sits_with_the_subjects_own(tmp_path: Path) -> None:
    # Consent is shown for the subject the route names: a guarantor's ID number beside the
    # applicant's would go on the applicant's consent.
    data = minimal()
    _consent_for(data, "identity.id_number")
    data["routes"] = [
        route(
            subject="applicant.user_id",
            fields=[
                {"path": "applicant.id_number", "category": "identity.id_number"},
                {"path": "applicant.docs.**", "category": "identity.id_number"},
                {"path": "guarantor.id_number", "category": "identity.id_number"},
                {"path": "query.id_number", "category": "identity.id_number"},
                {"path": "guarantor.name", "category": "identity.name"},  # not sensitive
            ],
        ),
        route(
            path="/v1/batch",
            records="batch.applicants[]",
            subject="batch.applicants[].user_id",
            fields=[
                {"path": "batch.applicants[].**", "category": "identity.id_number"},
                {"path": "batch.guarantor.id_number", "category": "identity.id_number"},
            ],
        ),
        route(
            path="/v1/batch-whole",
            records="batch.applicants[]",
            subject="batch.applicants[].user_id",
            # Over the records, and beside them too.
            fields=[{"path": "batch.**", "category": "identity.id_number"}],
        ),
        # The subject is the whole request's: any field is the subject's.
        route(
            path="/v1/flat",
            subject="user_id",
            fields=[{"path": "profile.id_number", "category": "identity.id_number"}],
        ),
        route(
            path="/v1/by-query",
            method="GET",
            subject="query.user_id",
            fields=[{"path": "query.id_number", "category": "identity.id_number"}],
        ),
    ]
    file, found = lines(tmp_path, data)
    applicant, batch = (
        ("applicant", "applicant.user_id"),
        (
            "batch.applicants[]",
            "batch.applicants[].user_id",
        ),
    )
    assert found == [
        _outside(file, 0, 2, "identity.id_number", *applicant),
        _outside(file, 0, 3, "identity.id_number", *applicant),
        _outside(file, 1, 1, "identity.id_number", *batch),
        _outside(file, 2, 0, "identity.id_number", *batch),
    ]
    # Without consent required, whose data it is changes nothing the gateway checks.
    data["terms"]["sensitive"]["consent_required"] = False
    assert lines(tmp_path, data)[1] == []


def test_a_third_partys_personal_data_sits_with_the_subjects_own(tmp_path: Path) -> None:
    data = minimal()
    data["partner"]["relationship"] = "third_party"
    data["terms"]["sensitive"] = {"consent_required": True}
    data["categories"].append("business.reference")
    data["routes"] = [
        route(
            subject="applicant.user_id",
            fields=[
                {"path": "applicant.name", "category": "identity.name"},
                {"path": "officer.name", "category": "identity.name"},
                {"path": "loan_id", "category": "business.reference"},  # not personal
            ],
        )
    ]
    file, found = lines(tmp_path, data)
    assert found == [_outside(file, 0, 1, "identity.name", "applicant", "applicant.user_id")]


def test_an_unknown_category_outside_the_subjects_data_is_reported_once(tmp_path: Path) -> None:
    data = minimal()
    data["partner"]["relationship"] = "third_party"
    data["terms"]["sensitive"] = {"consent_required": True}
    data["routes"] = [
        route(
            subject="applicant.user_id",
            fields=[{"path": "officer.shoe_size", "category": "identity.shoe_size"}],
        )
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.0.category: unknown data category 'identity.shoe_size'"
    ]


def test_third_party_requires_consent(tmp_path: Path) -> None:
    data = minimal()
    data["partner"]["relationship"] = "third_party"
    data["terms"]["sensitive"] = {"consent_required": False}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: terms.sensitive.consent_required: must be true for a third_party partner "
        "(it needs the data subject's separate consent)"
    ]


def test_third_party_requires_pia_ref(tmp_path: Path) -> None:
    data = minimal()
    data["partner"]["relationship"] = "third_party"
    del data["contract"]["pia_ref"]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.pia_ref: an impact assessment reference is required for "
        "a third_party partner"
    ]


def test_a_route_at_the_root_is_refused(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["path"] = "/"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.path: the path needs at least one segment: no request reaches /"
    ]


def test_a_contract_file_with_an_upper_case_suffix_is_read(tmp_path: Path) -> None:
    (tmp_path / "ACME.YAML").write_text("partner: [not, a, contract\n", encoding="utf-8")
    assert [p.name for p in contract_files(tmp_path)] == ["ACME.YAML"]


def test_entrusted_partner_without_sensitive_data_needs_no_pia_ref(tmp_path: Path) -> None:
    data = minimal()
    del data["contract"]["pia_ref"]
    _, found = lines(tmp_path, data)
    assert found == []


# --- rule 11: impact assessment ---------------------------------------------------------------


def test_sensitive_categories_require_pia_ref(tmp_path: Path) -> None:
    data = minimal()
    del data["contract"]["pia_ref"]
    data["categories"].append("identity.id_number")
    data["terms"]["sensitive"] = {"allowed": ["identity.id_number"]}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.pia_ref: an impact assessment reference is required for "
        "sensitive categories (identity.id_number)"
    ]


def test_cross_border_requires_pia_ref(tmp_path: Path) -> None:
    data = minimal()
    del data["contract"]["pia_ref"]
    data["terms"]["cross_border"] = {"allowed": True, "mechanism": "standard_contract"}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.pia_ref: an impact assessment reference is required for "
        "a cross-border transfer"
    ]


def test_allowing_minors_requires_pia_ref(tmp_path: Path) -> None:
    data = minimal()
    del data["contract"]["pia_ref"]
    data["terms"]["minors"] = "allow"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.pia_ref: an impact assessment reference is required for "
        "shares about children under 14 (minors: allow)"
    ]


def test_every_reason_for_pia_ref_in_one_line(tmp_path: Path) -> None:
    data = minimal()
    del data["contract"]["pia_ref"]
    data["partner"]["relationship"] = "third_party"
    data["categories"] += ["health.record", "biometric.face"]
    data["terms"]["sensitive"] = {"allowed": ["health.record", "biometric.face"]}
    data["terms"]["cross_border"] = {"allowed": True, "mechanism": "certification"}
    data["terms"]["minors"] = "allow"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.pia_ref: an impact assessment reference is required for "
        "a third_party partner, sensitive categories (biometric.face, health.record), "
        "a cross-border transfer and shares about children under 14 (minors: allow)"
    ]


# --- rule 12: cross-border mechanism ----------------------------------------------------------


def test_cross_border_requires_a_mechanism(tmp_path: Path) -> None:
    data = minimal()
    data["terms"]["cross_border"] = {"allowed": True}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: terms.cross_border.mechanism: required when cross_border.allowed is true "
        "(standard_contract, certification or security_assessment)"
    ]


def test_mechanism_without_cross_border(tmp_path: Path) -> None:
    data = minimal()
    data["terms"]["cross_border"] = {"allowed": False, "mechanism": "certification"}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: terms.cross_border.mechanism: set only when cross_border.allowed is true"
    ]


# --- rule 13: upstream location ---------------------------------------------------------------


def test_foreign_upstream_must_be_declared_cross_border(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["location"] = "SG"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: upstream.location: SG is outside the home jurisdiction CN: declare the "
        "transfer with terms.cross_border.allowed: true and a mechanism"
    ]


def test_foreign_upstream_with_declared_transfer_is_valid(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["location"] = "SG"
    data["terms"]["cross_border"] = {"allowed": True, "mechanism": "standard_contract"}
    _, found = lines(tmp_path, data)
    assert found == []


def test_home_jurisdiction_comes_from_settings(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["location"] = "SG"
    file, found = lines(tmp_path, data, Settings(jurisdiction="SG"))
    assert found == []
    data["upstream"]["location"] = "CN"
    file, found = lines(tmp_path, data, Settings(jurisdiction="SG"))
    assert found == [
        f"{file}: upstream.location: CN is outside the home jurisdiction SG: declare the "
        "transfer with terms.cross_border.allowed: true and a mechanism"
    ]


# --- rule 14: paths, bodies, records, routes --------------------------------------------------


def test_field_path_syntax(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"][0]["path"] = "applicant..name"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.0.path: field path 'applicant..name' has an empty key"
    ]


def test_an_empty_birth_date_is_a_problem_line_naming_the_key(tmp_path: Path) -> None:
    data = minimal()
    data["terms"]["minors"] = "deny"
    file = tmp_path / "acme.yaml"
    text = yaml.safe_dump(data, sort_keys=False).replace(
        "  subject: user_id\n",
        "  subject: user_id\n  birth_date:   # applicant.birth_date, once agreed\n",
    )
    assert "birth_date:" in text
    file.write_text(text, encoding="utf-8")
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(problem) for problem in problems] == [
        f"{file}: routes.0.birth_date: empty: name the field that holds the subject's birth "
        "date, or remove the key"
    ]


@pytest.mark.parametrize("key", ["subject", "records", "birth_date"])
def test_subject_records_and_birth_date_path_syntax(tmp_path: Path, key: str) -> None:
    data = minimal()
    del data["routes"][0]["subject"]  # only the broken path is judged
    data["routes"][0][key] = "a[b][]"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.{key}: field path 'a[b][]': after 'a' only [] (every element) may follow"
    ]


def test_response_path_syntax(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["response"] = {"fields": [{"path": "score"}, {"path": "**"}]}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.response.fields.1.path: field path '**': ** must follow a key "
        "(a.b.**), never stand alone"
    ]


def test_response_paths_name_no_query(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["response"] = {"fields": [{"path": "query.page"}]}
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: routes.0.response.fields.0.path: a response has no query parameters"]


def test_duplicate_response_paths(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["response"] = {"fields": [{"path": "score"}, {"path": "score"}]}
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.response.fields.1.path: duplicate field path 'score' "
        "(also routes.0.response.fields.0)"
    ]


def test_duplicate_field_paths_in_a_route(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"].append(
        {"path": "name", "category": "identity.name", "transform": "hash"}
    )
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.1.path: duplicate field path 'name' (also routes.0.fields.0)"
    ]


def test_field_paths_that_contradict_each_other(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"] = [
        {"path": "applicant", "category": "identity.name"},
        {"path": "applicant.name", "category": "identity.name"},
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.1.path: field path 'applicant.name' conflicts with "
        "'applicant': one place cannot be both an object and a scalar"
    ]


def test_transform_on_a_whole_subtree(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["fields"] = [
        {"path": "applicant.**", "category": "identity.name", "transform": "redact"}
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.0.path: field path 'applicant.**': a transform cannot apply "
        "to a whole subtree (**)"
    ]


def test_route_with_fields_and_content_types(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["content_types"] = ["application/pdf"]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0: a route has fields (a JSON body) or content_types (a raw body), "
        "not both"
    ]


def test_body_route_with_neither_fields_nor_content_types(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [route(method="PUT", fields=None)]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0: a PUT route needs fields (a JSON body) or content_types (a raw body)"
    ]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_bodyless_route_needs_neither(tmp_path: Path, method: str) -> None:
    data = minimal()
    data["routes"] = [route(method=method, path="/v1/things/{thing_id}", fields=None)]
    _, found = lines(tmp_path, data)
    assert found == []


def test_bodyless_route_takes_only_query_fields(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(
            method="GET",
            fields=[
                {"path": "query.page", "category": "business.reference"},
                {"path": "name", "category": "identity.name"},
            ],
        )
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.fields.1.path: a GET route carries no body: only query. fields "
        "are allowed"
    ]


def test_bodyless_route_takes_no_content_types(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [route(method="DELETE", fields=None, content_types=["text/plain"])]
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: routes.0.content_types: a DELETE route carries no body"]


def test_raw_route_subject_must_come_from_the_query(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(method="PUT", fields=None, content_types=["application/pdf"], subject="owner")
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.subject: a route without fields has no JSON body: use a query. or "
        "path. path"
    ]
    data["routes"][0]["subject"] = "query.owner"
    _, found = lines(tmp_path, data)
    assert found == []


def test_bodyless_route_subject_must_come_from_the_query(tmp_path: Path) -> None:
    data = minimal()
    query_fields = [{"path": "query.q", "category": "identity.name"}]
    data["routes"] = [route(method="GET", fields=query_fields, subject="user_id")]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.subject: a GET route has no body: use a query. or path. path"
    ]
    data["routes"][0]["subject"] = "query.user_id"
    _, found = lines(tmp_path, data)
    assert found == []


@pytest.mark.parametrize(
    ("method", "fields", "content_types"),
    [
        ("GET", [], None),
        ("DELETE", None, None),
        ("PUT", None, ["application/pdf"]),
        ("POST", [{"path": "name", "category": "identity.name"}], None),
    ],
)
def test_subject_and_birth_date_may_name_a_placeholder_of_the_path(
    tmp_path: Path, method: str, fields: list[dict[str, str]] | None, content_types: Any
) -> None:
    data = minimal()
    data["routes"] = [
        route(
            method=method,
            path="/v1/customers/{customer_id}/born/{born}",
            subject="path.customer_id",
            birth_date="path.born",
            fields=fields,
            content_types=content_types,
        )
    ]
    assert lines(tmp_path, data)[1] == []


def test_a_path_subject_names_a_placeholder_of_its_own_route(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(method="GET", path="/v1/customers/{customer_id}", subject="path.id", fields=[]),
        route(method="GET", path="/v1/customers", subject="path.customer_id", fields=[]),
        route(method="GET", path="/v1/people/{id}", birth_date="path.customer_id", fields=[]),
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.subject: path.id names no placeholder of the route's path "
        "/v1/customers/{customer_id} (its placeholders: path.customer_id)",
        f"{file}: routes.1.subject: path.customer_id names no placeholder of the route's path "
        "/v1/customers (its placeholders: none)",
        f"{file}: routes.2.birth_date: path.customer_id names no placeholder of the route's "
        "path /v1/people/{id} (its placeholders: path.id)",
    ]


def test_a_batch_takes_its_subjects_and_records_from_the_body_not_the_path(
    tmp_path: Path,
) -> None:
    data = minimal()
    data["routes"] = [
        route(path="/v1/batches/{batch_id}", records="path.batch_id[]"),
        route(path="/v1/groups/{group_id}", records="items[]", subject="path.group_id"),
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.records: records are an array in the body, not a placeholder of the "
        "path",
        f"{file}: routes.1.subject: must be inside each record: start with items[] (a "
        "placeholder of the path is one value for the whole batch)",
    ]


def test_a_third_party_route_may_name_its_subject_in_the_path(tmp_path: Path) -> None:
    data = minimal()
    data["partner"]["relationship"] = "third_party"
    data["terms"]["sensitive"] = {"allowed": [], "consent_required": True}
    data["routes"].append(
        route(method="GET", path="/v1/customers/{customer_id}", fields=[], subject="path.x")
    )
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1.subject: path.x names no placeholder of the route's path "
        "/v1/customers/{customer_id} (its placeholders: path.customer_id)"
    ]
    data["routes"][1]["subject"] = "path.customer_id"
    assert lines(tmp_path, data)[1] == []


def test_records_need_a_json_body(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [route(method="PUT", fields=None, content_types=["text/csv"], records="a[]")]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.records: a route without fields has no JSON body: records need one"
    ]


def test_subject_and_records_name_one_value_and_one_array(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(subject="applicant.**"),
        route(path="/v1/batches", records="batches[].items[]", subject="batches[].items[].user_id"),
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.subject: must name a single value, not a subtree (**)",
        f"{file}: routes.1.records: must name one array of records, with a single []",
    ]


def test_subject_inside_records_is_valid(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(
            records="items[]",
            subject="items[].user_id",
            birth_date="items[].birth_date",
            fields=[{"path": "items[].name", "category": "identity.name"}],
        )
    ]
    _, found = lines(tmp_path, data)
    assert found == []


@pytest.mark.parametrize("key", ["subject", "birth_date"])
def test_subject_and_birth_date_must_be_inside_records(tmp_path: Path, key: str) -> None:
    data = minimal()
    data["routes"] = [route(records="items[]", **{key: "owner.user_id"})]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.{key}: must be inside each record: start with items[] "
        "(e.g. items[].user_id)"
    ]


def test_records_of_scalar_ids_may_be_their_own_subject(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(
            records="user_ids[]",
            subject="user_ids[]",
            fields=[{"path": "user_ids[]", "category": "identity.name", "transform": "hash"}],
        )
    ]
    _, found = lines(tmp_path, data)
    assert found == []


def test_subject_must_name_one_value_per_record(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [route(records="items[]", subject="items[].owners[]")]
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: routes.0.subject: must name one value per record"]


@pytest.mark.parametrize("key", ["subject", "birth_date"])
def test_subject_without_records_must_not_fan_out(tmp_path: Path, key: str) -> None:
    data = minimal()
    data["routes"] = [route(**{key: "items[].user_id"})]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.{key}: must name one value; a route about many subjects sets "
        "records: items[]"
    ]


def test_duplicate_routes(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [route(), route(fields=[{"path": "other", "category": "identity.name"}])]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1: duplicate route POST /v1/things for purpose service_delivery "
        "(also routes.0)"
    ]


def test_same_route_for_another_purpose_is_valid(tmp_path: Path) -> None:
    data = minimal()
    data["purposes"].append("security_monitoring")
    data["routes"] = [route(), route(purpose="security_monitoring")]
    _, found = lines(tmp_path, data)
    assert found == []


def test_ambiguous_templates_for_the_same_method_and_purpose(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(method="GET", path="/v1/files/{file_id}", fields=None),
        route(method="GET", path="/v1/files/latest", fields=None),
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1.path: /v1/files/latest and /v1/files/{{file_id}} (routes.0) can "
        "match the same request for GET and purpose service_delivery"
    ]


def test_templates_for_other_purposes_must_not_overlap(tmp_path: Path) -> None:
    # A caller holding only the first purpose's scope would reach `export` through {note_id},
    # under the first route's filters.
    data = minimal()
    data["purposes"].append("security_monitoring")
    data["routes"] = [
        route(method="GET", path="/v1/notes/{note_id}", fields=None),
        route(method="GET", path="/v1/notes/export", fields=None, purpose="security_monitoring"),
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1.path: /v1/notes/export and /v1/notes/{{note_id}} (routes.0) can "
        "match the same request for GET and purposes service_delivery and security_monitoring"
    ]


def test_literals_differing_only_in_case_overlap(tmp_path: Path) -> None:
    data = minimal()
    data["purposes"].append("security_monitoring")
    data["routes"] = [
        route(method="GET", path="/v1/notes", fields=None),
        route(method="GET", path="/v1/Notes", fields=None, purpose="security_monitoring"),
    ]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.1.path: /v1/Notes and /v1/notes (routes.0) can match the same "
        "request for GET and purposes service_delivery and security_monitoring"
    ]


def test_one_template_may_serve_several_purposes_whatever_its_placeholders_are_called(
    tmp_path: Path,
) -> None:
    data = minimal()
    data["purposes"].append("security_monitoring")
    data["routes"] = [
        route(method="GET", path="/v1/notes/{note_id}", fields=None),
        route(method="GET", path="/v1/notes/{id}", fields=None, purpose="security_monitoring"),
    ]
    _, found = lines(tmp_path, data)
    assert found == []


def test_templates_with_other_methods_or_lengths_do_not_overlap(tmp_path: Path) -> None:
    data = minimal()
    data["routes"] = [
        route(method="GET", path="/v1/files/{file_id}", fields=None),
        route(method="DELETE", path="/v1/files/latest", fields=None),
        route(method="GET", path="/v1/files/{file_id}/versions", fields=None),
        route(method="GET", path="/v1/folders/{file_id}", fields=None),
    ]
    _, found = lines(tmp_path, data)
    assert found == []


def _overlaps_pairwise(routes: list[Route]) -> list[tuple[str, str]]:
    # The rule as first written: every route against every earlier one, in order.
    found: list[tuple[str, str]] = []
    seen: list[tuple[int, Route, tuple[str | None, ...]]] = []
    for index, route in enumerate(routes):
        parts = Template.parse(route.path).parts
        for other_index, other, other_parts in seen:
            if other.method != route.method:
                continue
            if parts == other_parts:
                if other.purpose == route.purpose:
                    found.append((f"routes.{index}", f"duplicate of routes.{other_index}"))
                    break
                continue
            if len(parts) == len(other_parts) and all(
                x is None or y is None or x.casefold() == y.casefold()
                for x, y in zip(parts, other_parts, strict=True)
            ):
                found.append((f"routes.{index}.path", f"{other.path} (routes.{other_index})"))
                break
        seen.append((index, route, parts))
    return found


_SEGMENTS = st.sampled_from(["v1", "V1", "notes", "Notes", "{id}", "{note_id}", "export"])
_ROUTES = st.lists(
    st.builds(
        lambda method, segments, purpose: Route(
            method=method, path="/" + "/".join(segments), purpose=purpose
        ),
        st.sampled_from(["GET", "POST"]),
        st.lists(_SEGMENTS, max_size=3),
        st.sampled_from(["service_delivery", "security_monitoring"]),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(_ROUTES)
def test_route_overlaps_are_the_pairwise_rule_however_found(routes: list[Route]) -> None:
    found = list(contractset_module._check_route_overlaps(routes))
    # Each problem names the earliest route it clashes with, as the pairwise rule does.
    assert [
        (path, f"duplicate of {message.rsplit('(also ', 1)[1][:-1]}")
        if message.startswith("duplicate route")
        else (path, message.split(" and ", 1)[1].split(" can match", 1)[0])
        for path, message in found
    ] == _overlaps_pairwise(routes)


def test_route_header_may_not_be_the_upstream_credential(tmp_path: Path) -> None:
    data = minimal()
    data["upstream"]["auth"] = {"type": "header", "name": "X-Api-Key", "value_env": "ACME_KEY"}
    data["routes"][0]["headers"] = ["X-Request-Id", "x-api-key"]
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: routes.0.headers.1: x-api-key carries the upstream credential and is set by "
        "the gateway"
    ]


# --- rule 15: placeholders --------------------------------------------------------------------


def test_placeholder_repeated_in_one_template(tmp_path: Path) -> None:
    data = minimal()
    data["routes"][0]["path"] = "/v1/{id}/files/{id}"
    file, found = lines(tmp_path, data)
    assert found == [f"{file}: routes.0.path: placeholder {{id}} appears more than once"]


# --- all at once ------------------------------------------------------------------------------


def test_three_problems_give_three_lines_in_one_run(tmp_path: Path) -> None:
    data = minimal()
    data["contract"]["expires"] = "2024-06-30"
    data["routes"][0]["purpose"] = "marketing"
    data["routes"][0]["fields"][0]["category"] = "contact.email"
    file, found = lines(tmp_path, data)
    assert found == [
        f"{file}: contract.expires: 2024-06-30 is before effective 2025-01-01",
        f"{file}: routes.0.purpose: 'marketing' is not one of purposes (service_delivery)",
        f"{file}: routes.0.fields.0.category: contact.email is not in categories "
        "(the approved data scope)",
    ]


def test_problems_of_every_file_are_reported(tmp_path: Path) -> None:
    bad_dates = minimal()
    bad_dates["contract"]["expires"] = "2024-06-30"
    bad_key = minimal()
    bad_key["partner"]["id"] = "beta"
    bad_key["terms"]["retention"] = 30
    first = write(tmp_path, "acme.yaml", bad_dates)
    second = write(tmp_path, "beta.yaml", bad_key)
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [
        f"{first}: contract.expires: 2024-06-30 is before effective 2025-01-01",
        f"{second}: terms.retention: unknown key",
    ]


def test_validate_contract_returns_paths_and_messages() -> None:
    data = minimal()
    data["routes"][0]["purpose"] = "marketing"
    contract = Contract.model_validate(data)
    assert validate_contract(contract, BUILTIN_TAXONOMY, Settings()) == [
        ("routes.0.purpose", "'marketing' is not one of purposes (service_delivery)")
    ]


def test_problem_str_is_file_path_message() -> None:
    assert str(Problem("c/acme.yaml", "routes.0.purpose", "bad")) == (
        "c/acme.yaml: routes.0.purpose: bad"
    )
    assert str(Problem("c/acme.yaml", "", "not valid UTF-8")) == "c/acme.yaml: not valid UTF-8"


# --- files and YAML ---------------------------------------------------------------------------


DUPLICATE_FIELDS = """\
partner: {id: acme, name: ACME Co., kind: other, relationship: entrusted}
contract: {id: DPA-1, version: 1, effective: 2025-01-01, expires: 2027-12-31, status: active}
upstream: {base_url: "https://api.acme.example", location: CN}
purposes: [service_delivery]
categories: [identity.name, contact.phone]
terms: {retention_days: 30}
routes:
  - method: POST
    path: /v1/things
    purpose: service_delivery
    fields:
      - {path: name, category: identity.name}
    fields:
      - {path: phone, category: contact.phone}
"""


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(DUPLICATE_FIELDS, encoding="utf-8")
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [
        f"{path}: routes.0.fields: duplicate key 'fields' (line 13; first on line 11)"
    ]


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    text = yaml.safe_dump(minimal(), sort_keys=False, allow_unicode=True)
    path.write_bytes(text.replace("ACME Co.", "ACME \u516c\u53f8").encode("gb18030"))
    _, problems = load_contract_set(tmp_path, Settings())
    offset = text.index("ACME Co.") + len("ACME ")
    assert [str(p) for p in problems] == [f"{path}: not valid UTF-8 (byte 0xb9 at offset {offset})"]


def test_invalid_yaml_is_one_line_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text("partner: {id: acme\nroutes: []\n", encoding="utf-8")
    _, problems = load_contract_set(tmp_path, Settings())
    assert [str(p) for p in problems] == [
        f"{path}: not valid YAML at line 2, column 7: expected ',' or '}}', but got ':'"
    ]


def test_a_route_merging_two_routes_with_the_same_key_is_refused(tmp_path: Path) -> None:
    data = minimal()
    data["categories"].append("contact.phone")
    del data["routes"]
    path = tmp_path / "acme.yaml"
    path.write_text(
        yaml.safe_dump(data, sort_keys=False)
        + "routes:\n"
        + "  - &names {method: POST, path: /v1/names, purpose: service_delivery,\n"
        + "             fields: [{path: name, category: identity.name}]}\n"
        + "  - &phones {method: POST, path: /v1/phones, purpose: service_delivery,\n"
        + "              fields: [{path: phone, category: contact.phone}]}\n"
        + "  - <<: [*names, *phones]\n"
        + "    path: /v1/profile\n",
        encoding="utf-8",
    )
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    # `method` and `purpose` are merged twice too, but read the same whichever wins.
    assert [p.path for p in problems] == ["routes.2.fields"]


def test_a_base_url_hidden_in_binary_is_refused(tmp_path: Path) -> None:
    data = minimal()
    del data["upstream"]
    path = tmp_path / "acme.yaml"
    path.write_text(
        yaml.safe_dump(data, sort_keys=False)
        + "upstream:\n  location: CN\n"
        + "  base_url: !!binary aHR0cHM6Ly9jb2xsZWN0b3Iub3RoZXIuZXhhbXBsZQ==\n",
        encoding="utf-8",
    )
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    [problem] = problems
    assert "the tag !!binary is not accepted" in problem.message


@pytest.mark.parametrize(
    ("routes", "last"),
    [
        (60, "and 10 more problem(s) in this file"),
        # Fifty are all listed: no line counts nothing more.
        (50, "routes.49.purpose: 'other' is not one of purposes (service_delivery)"),
    ],
)
def test_problems_past_fifty_in_one_file_are_counted_not_listed(
    tmp_path: Path, routes: int, last: str
) -> None:
    data = minimal()
    data["purposes"] = ["service_delivery"]
    data["routes"] = [route(path=f"/v1/things/{n}", purpose="other") for n in range(routes)]
    file, found = lines(tmp_path, data)
    assert len(found) == min(routes, 50) + (routes > 50)
    assert found[:2] == [
        f"{file}: routes.{n}.purpose: 'other' is not one of purposes (service_delivery)"
        for n in (0, 1)
    ]
    assert found[-1] == f"{file}: {last}"


def test_an_alias_bomb_is_one_problem(tmp_path: Path) -> None:
    data = minimal()
    del data["routes"]
    fields = "[&f {path: name, category: identity.name}" + ", *f" * 299 + "]"
    path = tmp_path / "acme.yaml"
    path.write_text(
        yaml.safe_dump(data, sort_keys=False)
        + "routes:\n  - &r {method: POST, path: /v1/a, purpose: service_delivery, fields: "
        + fields
        + "}\n"
        + "  - *r\n" * 299,
        encoding="utf-8",
    )
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    [problem] = problems
    assert problem.message.startswith("more than 100000 values, counting each alias")


def test_a_contract_being_rewritten_refuses_the_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "acme.yaml", minimal())
    whole = path.read_bytes()
    real = yamlfile._read_fd
    reads: list[int] = []

    def read_while_rewritten(fd: int, limit: int) -> bytes:
        # Each read meets the file truncated and written again, each time a little further
        # (another size: timestamps alone may not tell two writes apart within a clock tick).
        reads.append(fd)
        with path.open("wb") as stream:
            stream.write(whole[: len(whole) // 2 + len(reads)])
        return real(fd, limit)

    monkeypatch.setattr(yamlfile, "_read_fd", read_while_rewritten)
    monkeypatch.setattr(yamlfile, "READ_RETRY_PAUSE_S", 0.001)
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [
        f"{path}: the file changed while it was read; replace contract files by renaming a "
        "complete file into place"
    ]


def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    contract_set, problems = load_contract_set(missing, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [f"{missing}: no contract files: not a directory"]


def test_empty_directory_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a contract\n", encoding="utf-8")
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [f"{tmp_path}: no contract files (*.yaml, *.yml)"]


def test_contract_files_skip_underscore_and_hidden_files(tmp_path: Path) -> None:
    for name in ["b.yml", "a.yaml", "_taxonomy.yaml", "_draft.yaml", ".#a.yaml", "notes.txt"]:
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "_dir.yaml").mkdir()
    assert [p.name for p in contract_files(tmp_path)] == ["a.yaml", "b.yml", "dir.yaml"]


@pytest.mark.parametrize("kind", ["dangling symlink", "directory", "fifo"])
def test_a_contract_name_that_is_no_regular_file_is_a_problem(tmp_path: Path, kind: str) -> None:
    write(tmp_path, "acme.yaml", minimal())
    entry = tmp_path / "fixit.yaml"
    if kind == "dangling symlink":
        entry.symlink_to(tmp_path / "missing.yaml")
        message = "a symbolic link to a file that does not exist"
    elif kind == "directory":
        entry.mkdir()
        message = "not a regular file but a directory: nothing was read"
    else:
        os.mkfifo(entry)  # opened for reading, it would wait for a writer
        message = "not a regular file but a FIFO: nothing was read"
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [f"{entry}: {message}"]


def test_a_symbolic_link_to_a_contract_is_read(tmp_path: Path) -> None:
    # As a Kubernetes ConfigMap mounts files: links into a hidden folder.
    (tmp_path / "..data").mkdir()
    write(tmp_path / "..data", "acme.yaml", minimal())
    (tmp_path / "acme.yaml").symlink_to(tmp_path / "..data" / "acme.yaml")
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert problems == []
    assert contract_set is not None
    assert list(contract_set.contracts) == ["acme"]


@pytest.mark.parametrize("name", ["_taxonomy.yml", "_taxonomy.YAML", "_Taxonomy.yaml"])
def test_a_taxonomy_file_under_a_near_name_refuses_the_set(tmp_path: Path, name: str) -> None:
    # Read, it would make a category sensitive: skipped, the contract would pass without
    # listing it in terms.sensitive.allowed.
    (tmp_path / name).write_text(
        "categories: [{name: identity.name, sensitive: true}]\n", encoding="utf-8"
    )
    write(tmp_path, "acme.yaml", minimal())
    contract_set, problems = load_contract_set(tmp_path, Settings())
    assert contract_set is None
    assert [str(p) for p in problems] == [
        f"{tmp_path / name}: not read: the taxonomy must be named exactly _taxonomy.yaml "
        "(rename this file)"
    ]


def test_taxonomy_file_extends_what_contracts_may_name(tmp_path: Path) -> None:
    (tmp_path / "_taxonomy.yaml").write_text(
        "categories:\n  - {name: workspace.desk_booking, description: desks a user booked}\n",
        encoding="utf-8",
    )
    data = minimal()
    data["categories"].append("workspace.desk_booking")
    data["routes"][0]["fields"].append({"path": "desk", "category": "workspace.desk_booking"})
    _, found = lines(tmp_path, data)
    assert found == []


def test_taxonomy_problems_are_reported_with_contract_problems(tmp_path: Path) -> None:
    taxonomy = tmp_path / "_taxonomy.yaml"
    taxonomy.write_text(
        "categories:\n  - {name: business.salary}\n  - {name: workspace.desk}\n",
        encoding="utf-8",
    )
    data = minimal()
    data["categories"].append("workspace.desk")
    data["routes"][0]["fields"].append({"path": "salary", "category": "business.salary"})
    file, found = lines(tmp_path, data)
    assert found == [
        f"{taxonomy}: categories.0: business categories are exempt from the data-scope checks "
        "and may not be extended; add the name to a personal-data group",
        f"{file}: routes.0.fields.1.category: unknown data category 'business.salary'",
    ]


# --- a folder swapped while it is read ---------------------------------------------------------


def _configmap(folder: Path, *generations: int) -> None:
    """A Kubernetes ConfigMap mount: each version's files in `..<n>`, `..data` linking to the
    first, and each name at the top linking through `..data`."""
    for version in generations:
        (folder / f"..{version}").mkdir()
        for partner_id in ("alpha", "beta"):
            data = minimal()
            data["partner"]["id"] = partner_id
            data["contract"]["version"] = version
            (folder / f"..{version}" / f"{partner_id}.yaml").write_text(yaml.safe_dump(data))
    os.symlink(f"..{generations[0]}", folder / "..data")
    for partner_id in ("alpha", "beta"):
        os.symlink(f"..data/{partner_id}.yaml", folder / f"{partner_id}.yaml")


def _swap_after_reads(
    monkeypatch: pytest.MonkeyPatch, folder: Path, link: str, targets: list[str]
) -> None:
    """After each file read, the next of `targets` is renamed into place as `link`."""
    pending = iter(targets)

    def read_then_swap(path: Path) -> tuple[object, bytes]:
        result = yamlfile.read_yaml_file(path)
        target = next(pending, None)
        if target is not None:
            os.symlink(target, folder / "swap.tmp")
            os.replace(folder / "swap.tmp", folder / link)
        return result

    monkeypatch.setattr(contractset_module, "read_yaml_file", read_then_swap)


def test_a_configmap_swapped_during_a_load_gives_one_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configmap(tmp_path, 1, 2)
    _swap_after_reads(monkeypatch, tmp_path, "..data", ["..2"])  # after alpha's read
    loaded, problems = load_contract_set(tmp_path, Settings())
    assert problems == []
    assert loaded is not None
    # Read anew once the swap was seen: both of the version swapped in, never one of each.
    assert {p: c.contract.contract.version for p, c in loaded.contracts.items()} == {
        "alpha": 2,
        "beta": 2,
    }


def test_a_folder_link_flipped_during_a_load_gives_one_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    _configmap(releases, 1, 2)
    os.symlink("releases/..1", tmp_path / "contracts")
    _swap_after_reads(monkeypatch, tmp_path, "contracts", ["releases/..2"])
    loaded, problems = load_contract_set(tmp_path / "contracts", Settings())
    assert problems == []
    assert loaded is not None
    assert {c.contract.contract.version for c in loaded.contracts.values()} == {2}


def test_a_version_removed_right_after_the_swap_is_read_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kubelet swaps `..data` and then deletes the version it replaced: a load that had just
    # resolved it finds the folder gone, and reads the new version instead of failing.
    _configmap(tmp_path, 1, 2)
    swapped: list[None] = []

    def swap_and_remove_then_read(folder: Path) -> tuple[Taxonomy, list[Problem]]:
        if not swapped:
            swapped.append(None)
            os.symlink("..2", tmp_path / "swap.tmp")
            os.replace(tmp_path / "swap.tmp", tmp_path / "..data")
            shutil.rmtree(tmp_path / "..1")
        return load_taxonomy(folder)

    monkeypatch.setattr(contractset_module, "load_taxonomy", swap_and_remove_then_read)
    loaded, problems = load_contract_set(tmp_path, Settings())
    assert problems == []
    assert loaded is not None
    assert {c.contract.contract.version for c in loaded.contracts.values()} == {2}


def test_a_swap_and_back_during_a_load_gives_one_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configmap(tmp_path, 1, 2)
    _swap_after_reads(monkeypatch, tmp_path, "..data", ["..2", "..1"])
    loaded, problems = load_contract_set(tmp_path, Settings())
    assert problems == []
    assert loaded is not None
    assert {c.contract.contract.version for c in loaded.contracts.values()} == {1}


def test_a_folder_that_keeps_being_swapped_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _configmap(tmp_path, *range(1, 9))
    _swap_after_reads(monkeypatch, tmp_path, "..data", [f"..{n}" for n in range(2, 9)])
    loaded, problems = load_contract_set(tmp_path, Settings())
    assert loaded is None
    assert [p.message for p in problems] == [
        "the folder kept being replaced while it was read; try again"
    ]


def test_a_configmaps_files_are_named_as_mounted(tmp_path: Path) -> None:
    _configmap(tmp_path, 1)
    (tmp_path / "..1" / "_taxonomy.yaml").write_text("categories: 7\n")
    loaded, problems = load_contract_set(tmp_path, Settings())
    assert loaded is None
    assert {p.file for p in problems} == {str(tmp_path / "_taxonomy.yaml")}
    (tmp_path / "..1" / "_taxonomy.yaml").unlink()
    loaded, problems = load_contract_set(tmp_path, Settings())
    assert loaded is not None
    assert {c.file for c in loaded.contracts.values()} == {
        tmp_path / "alpha.yaml",
        tmp_path / "beta.yaml",
    }


# --- warnings -------------------------------------------------------------------------------

TODAY = date(2026, 12, 3)


def warnings_of(data: dict[str, Any], today: date = TODAY) -> list[tuple[str, str]]:
    """The warnings of a contract that has no problems."""
    contract = Contract.model_validate(data)
    assert validate_contract(contract, BUILTIN_TAXONOMY, Settings()) == []
    return contract_warnings(contract, BUILTIN_TAXONOMY, today)


UPLOAD = {"method": "PUT", "fields": None, "content_types": ["application/pdf"]}


@pytest.mark.parametrize(
    ("changes", "categories", "hint"),
    [
        ({}, ["identity.name"], "(identity.name)"),
        (
            {"fields": [{"path": "query.email", "category": "contact.email"}], "method": "GET"},
            ["contact.email"],
            "query. or path.",
        ),
        (
            {
                "records": "items[]",
                "fields": [
                    {"path": "items[].name", "category": "identity.name"},
                    {"path": "batch_id", "category": "business.reference"},
                ],
            },
            ["identity.name"],
            "items[].<id>",
        ),
        (UPLOAD, ["identity.name", "file.content"], "file.content, identity.name"),
    ],
    ids=["a personal field", "a personal query parameter", "a batch", "an upload"],
)
def test_a_route_sending_personal_data_without_a_subject_is_warned_of(
    changes: dict[str, Any], categories: list[str], hint: str
) -> None:
    data = minimal()
    data["categories"] = categories
    data["routes"] = [route(**changes)]
    [(where, message)] = warnings_of(data)
    assert where == "routes.0.subject"
    assert "`logs subject` cannot find its shares" in message
    assert hint in message


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "user_id"},
        {"fields": [{"path": "note", "category": "business.note"}]},
        {
            "records": "items[]",
            "subject": "items[].id",
            "fields": [{"path": "items[].name", "category": "identity.name"}],
        },
        {**UPLOAD, "subject": "query.owner"},
        {**UPLOAD, "path": "/v1/people/{person_id}/files", "subject": "path.person_id"},
        {"method": "GET", "fields": None},
        {"method": "GET", "path": "/v1/people/{person_id}", "fields": None},
    ],
    ids=[
        "a subject",
        "business data only",
        "records and a subject in each",
        "an upload naming its subject in the query",
        "an upload naming its subject in the path",
        "a GET sending nothing",
        "a GET sending only a placeholder",
    ],
)
def test_a_route_whose_shares_logs_subject_finds_or_that_sends_nothing_personal_is_not(
    changes: dict[str, Any],
) -> None:
    data = minimal()
    data["routes"] = [route(**changes)]
    assert warnings_of(data) == []


def test_an_upload_of_a_partner_with_no_personal_category_is_not_warned_of() -> None:
    data = minimal()
    data["categories"] = []
    data["routes"] = [route(**UPLOAD)]
    assert warnings_of(data) == []


@pytest.mark.parametrize(
    ("expires", "shown"),
    [
        (date(2027, 1, 2), "the contract's last day is 2027-01-02, in 30 day(s)"),
        (date(2026, 12, 4), "the contract's last day is 2026-12-04, in 1 day(s)"),
        (date(2026, 12, 3), "the contract's last day is 2026-12-03, today"),
        (date(2026, 12, 2), "expired on 2026-12-02: every share is refused since 2026-12-03"),
    ],
    ids=["in 30 days", "tomorrow", "today", "yesterday"],
)
def test_an_active_contract_ending_within_30_days_or_ended_is_warned_of(
    expires: date, shown: str
) -> None:
    data = minimal()
    data["contract"]["effective"] = "2025-01-01"
    data["contract"]["expires"] = expires.isoformat()
    [(where, message)] = warnings_of(data)
    assert where == "contract.expires"
    assert message.startswith(shown)
    if expires >= TODAY:
        assert f"every share is refused from {expires + timedelta(days=1)}" in message


@pytest.mark.parametrize(
    ("expires", "status"),
    [("2027-01-03", "active"), ("2026-12-10", "suspended"), ("2026-01-01", "terminated")],
    ids=["in 31 days", "suspended", "terminated and ended"],
)
def test_a_contract_ending_later_or_not_active_is_not_warned_of(expires: str, status: str) -> None:
    data = minimal()
    data["contract"].update(expires=expires, status=status)
    assert warnings_of(data) == []


def test_an_active_contract_not_yet_in_force_is_warned_of() -> None:
    data = minimal()
    data["contract"]["effective"] = "2026-12-04"
    assert warnings_of(data) == [
        (
            "contract.effective",
            "takes effect on 2026-12-04: every share is refused until then (403 contract_inactive)",
        )
    ]


@pytest.mark.parametrize(
    ("effective", "status"),
    [("2026-12-03", "active"), ("2026-12-04", "suspended")],
    ids=["in force today", "suspended"],
)
def test_a_contract_in_force_or_not_active_is_not_warned_of_its_start(
    effective: str, status: str
) -> None:
    data = minimal()
    data["contract"].update(effective=effective, status=status)
    assert warnings_of(data) == []


def test_the_set_loads_with_its_warnings_named_by_file_and_partner(tmp_path: Path) -> None:
    data = minimal()
    data["contract"]["expires"] = "2026-12-20"
    data["routes"] = [route(), route(path="/v1/others", subject="user_id")]
    file = write(tmp_path, "acme.yaml", data)
    contract_set, problems = load_contract_set(tmp_path, Settings(), today=TODAY)
    assert problems == []
    assert contract_set is not None
    assert [(w.file, w.partner, w.path) for w in contract_set.warnings] == [
        (str(file), "acme", "routes.0.subject"),
        (str(file), "acme", "contract.expires"),
    ]
    assert str(contract_set.warnings[1]) == (
        f"{file}: warning: contract.expires: the contract's last day is 2026-12-20, in 17 "
        "day(s): every share is refused from 2026-12-21; renew it (a new version with a later "
        "expires) in time"
    )


def test_the_warnings_are_in_the_order_of_the_partner_ids_not_of_the_files(
    tmp_path: Path,
) -> None:
    # A file's name need not be its partner's: warnings follow the partners, as the contracts
    # `contracts validate` lists as valid do.
    for file, partner_id in [("a.yaml", "zeta"), ("b.yaml", "alpha")]:
        data = minimal()
        data["partner"]["id"] = partner_id
        data["contract"]["expires"] = "2026-12-20"
        write(tmp_path, file, data)
    contract_set, problems = load_contract_set(tmp_path, Settings(), today=TODAY)
    assert problems == []
    assert contract_set is not None
    assert [w.partner for w in contract_set.warnings] == ["alpha", "zeta"]


def test_a_warning_shows_a_control_character_of_its_file_name_escaped(tmp_path: Path) -> None:
    data = minimal()
    data["contract"]["expires"] = "2026-12-20"
    write(tmp_path, "ac\x1b[2Jme.yaml", data)
    contract_set, _ = load_contract_set(tmp_path, Settings(), today=TODAY)
    assert contract_set is not None
    [warning] = contract_set.warnings
    assert str(warning).startswith(f"{tmp_path}/ac\\x1b[2Jme.yaml: warning: contract.expires: ")


def test_the_day_given_to_the_load_is_the_one_its_contract_dates_are_judged_on(
    tmp_path: Path,
) -> None:
    data = minimal()
    data["contract"]["expires"] = "2027-03-01"
    write(tmp_path, "acme.yaml", data)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # more than 30 days before
    contract_set, _ = load_contract_set(tmp_path, Settings(), now=now, today=date(2027, 3, 1))
    assert contract_set is not None
    [warning] = contract_set.warnings
    assert warning.message.startswith("the contract's last day is 2027-03-01, today: ")


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("Pacific/Kiritimati", "expired on 2026-12-31"),  # UTC+14: 2027-01-01 02:00 there
        ("Pacific/Pago_Pago", "the contract's last day is 2026-12-31, today"),  # UTC-11: 01:00
    ],
)
def test_today_is_the_day_in_the_settings_time_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str, shown: str
) -> None:
    noon = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(contractset_module, "datetime", stopped_clock(noon))
    data = minimal()
    data["contract"]["expires"] = "2026-12-31"
    write(tmp_path, "acme.yaml", data)
    contract_set, _ = load_contract_set(tmp_path, Settings(timezone=zone))
    assert contract_set is not None
    [warning] = contract_set.warnings
    assert warning.message.startswith(shown)


def test_the_bundled_contracts_have_no_warnings() -> None:
    contract_set, problems = load_contract_set(BUNDLED, Settings(), today=TODAY)
    assert problems == []
    assert contract_set is not None
    assert contract_set.warnings == ()
