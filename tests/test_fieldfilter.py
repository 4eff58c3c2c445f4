"""Tests for field paths, plan compilation, and what the filter keeps, transforms and strips."""

from __future__ import annotations

import copy
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.fieldfilter import (
    MAX_STRIPPED_PATHS,
    MORE_STRIPPED,
    AllowRule,
    Each,
    FieldDecision,
    FilterPlan,
    FilterResult,
    Key,
    PathSyntaxError,
    Segment,
    Subtree,
    compile_plan,
    parse_path,
    query_parameter,
    select,
)
from gateway.jsonbody import JSONValue
from gateway.pii import scan
from gateway.transforms import (
    GeneralizeBucket,
    GeneralizeYear,
    Hash,
    Mask,
    Redact,
    Transform,
    Untransformable,
    apply_transform,
)

KEY = b"partner-key-for-tests"


def hmac_hex(text: str) -> str:
    return hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()


def plan(*rules: AllowRule | str) -> FilterPlan:
    return compile_plan([r if isinstance(r, AllowRule) else AllowRule(r, None) for r in rules])


def run(
    p: FilterPlan,
    doc: dict[str, JSONValue],
    query: Mapping[str, str] | None = None,
    *,
    trace: bool = False,
) -> FilterResult:
    return p.apply(doc, query or {}, hash_key=KEY, trace=trace)


# --- parse_path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("a", (Key("a"),)),
        ("a.b.c", (Key("a"), Key("b"), Key("c"))),
        ("a.b[]", (Key("a"), Key("b"), Each())),
        ("items[].amount", (Key("items"), Each(), Key("amount"))),
        ("grid[][]", (Key("grid"), Each(), Each())),
        ("a.b.**", (Key("a"), Key("b"), Subtree())),
        ("items[].**", (Key("items"), Each(), Subtree())),
        ("申请人.姓名", (Key("申请人"), Key("姓名"))),
        ("Case-Sensitive_key:1", (Key("Case-Sensitive_key:1"),)),
        ("query.page", (Key("query"), Key("page"))),
        ("query", (Key("query"),)),
        ("query[]", (Key("query"), Each())),
    ],
)
def test_parse_path(path: str, segments: tuple[Segment, ...]) -> None:
    assert parse_path(path) == segments


@pytest.mark.parametrize(
    ("path", "mentions"),
    [
        ("", "empty"),
        ("a..b", "empty key"),
        (".a", "empty key"),
        ("a.", "empty key"),
        ("a b", "whitespace"),
        ("a.b\t", "whitespace"),
        ("a*", "may not contain"),
        ("a]", "may not contain"),
        ("[]", "without a key"),
        ("a.[]", "without a key"),
        ("a[", "only []"),
        ("a[x]", "only []"),
        ("a[0]", "only []"),
        ("a[]b", "only []"),
        ("a[][", "only []"),
        ("a[xy]", "only []"),
        ("a[[]]", "only []"),
        ("**", "must follow a key"),
        ("a.**.b", "last segment"),
        ("a.*", "may not contain"),
        ("a.***", "may not contain"),
        ("a**", "may not contain"),
        ("query.", "query.<name>"),
        ("query.a.b", "query.<name>"),
        ("query.a[]", "query.<name>"),
        ("query.**", "query.<name>"),
    ],
)
def test_parse_path_refuses(path: str, mentions: str) -> None:
    with pytest.raises(PathSyntaxError) as info:
        parse_path(path)
    assert info.value.path == path
    assert mentions in info.value.message
    assert str(info.value) == info.value.message
    assert isinstance(info.value, ValueError)


def test_a_path_of_254_segments_reaches_a_value_254_levels_deep() -> None:
    path = "a" + ".a" * 253
    doc: JSONValue = "deep"
    for _ in range(254):
        doc = {"a": doc}
    assert isinstance(doc, dict)
    result = run(plan(path), {**doc, "b": 1})
    assert result.document == doc
    assert result.fields_sent == (path,)
    with pytest.raises(PathSyntaxError, match="more than 254 segments"):
        parse_path(path + ".a")


def test_query_parameter() -> None:
    assert query_parameter("query.page") == "page"
    assert query_parameter("query") is None
    assert query_parameter("applicant.name") is None


# --- compile_plan --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "mentions"),
    [
        (["a.b", "a.b"], "listed twice"),
        (["a.b[]", "a.b[]"], "listed twice"),
        (["a.**", "a.**"], "listed twice"),
        (["query.page", "query.page"], "listed twice"),
        (["a.b", "a.b.c"], "conflicts with 'a.b'"),
        (["a.b.c", "a.b"], "conflicts with 'a.b.c'"),
        (["a.b", "a.b[]"], "conflicts with 'a.b'"),
        (["a.b[]", "a.b[].c"], "conflicts with 'a.b[]'"),
        (["a.**", "a.b"], "conflicts with 'a.**'"),
        (["a.b", "a.**"], "conflicts with 'a.b'"),
        (["a.**", "a[]"], "conflicts with 'a.**'"),
        (["items[].x", "items.x"], "conflicts with 'items[].x'"),
        (["a..b"], "empty key"),
    ],
)
def test_compile_plan_refuses(paths: list[str], mentions: str) -> None:
    with pytest.raises(PathSyntaxError) as info:
        plan(*paths)
    assert info.value.path == paths[-1]
    assert mentions in info.value.message


def test_compile_plan_refuses_a_transform_on_a_whole_subtree() -> None:
    with pytest.raises(PathSyntaxError, match=r"transform cannot apply to a whole subtree"):
        plan(AllowRule("a.**", None, Hash()))


def test_a_body_key_named_query_does_not_clash_with_query_parameters() -> None:
    p = plan("query", "query.query")
    result = run(p, {"query": "text"}, {"query": "q"})
    assert result.document == {"query": "text"}
    assert result.query == {"query": "q"}


def test_the_plan_is_immutable() -> None:
    p = plan("a.b")
    with pytest.raises(AttributeError):
        p.rules = ()  # type: ignore[misc]
    assert p.rules == (AllowRule("a.b", None),)


# --- apply: path forms ---------------------------------------------------------------------------


def test_scalar_path_keeps_only_that_scalar() -> None:
    doc: dict[str, JSONValue] = {"a": {"b": {"c": 1, "d": 2}, "e": 3}, "f": 4}
    assert run(plan("a.b.c"), doc).document == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("trace", [False, True])
def test_stripped_paths_are_capped_but_counted_and_the_cut_is_said(trace: bool) -> None:
    many: dict[str, JSONValue] = {f"k{i}": i for i in range(1000)}
    result = run(plan("id"), {"id": 1, **many}, trace=trace)
    assert result.document == {"id": 1}
    assert len(result.fields_stripped) == MAX_STRIPPED_PATHS + 1
    assert result.fields_stripped[-1] == MORE_STRIPPED
    assert set(result.fields_stripped[:-1]) < set(many)
    assert result.stripped_count == 1000


@pytest.mark.parametrize("trace", [False, True])
def test_the_same_256_paths_stripped_again_are_all_listed(trace: bool) -> None:
    item: dict[str, JSONValue] = {f"k{i}": i for i in range(MAX_STRIPPED_PATHS - 1)}
    result = run(plan("items[].id"), {"items": [item, item], "extra": 1}, trace=trace)
    assert set(result.fields_stripped) == {f"items[].{key}" for key in item} | {"extra"}
    assert MORE_STRIPPED not in result.fields_stripped
    assert result.stripped_count == 2 * len(item) + 1


@pytest.mark.parametrize("trace", [False, True])
def test_paths_stripped_again_once_the_list_is_full_do_not_end_it_with_more(trace: bool) -> None:
    # The first element fills the list; the second strips only paths it already names.
    item: dict[str, JSONValue] = {f"k{i}": i for i in range(MAX_STRIPPED_PATHS)}
    result = run(plan("items[].id"), {"items": [item, item]}, trace=trace)
    assert set(result.fields_stripped) == {f"items[].{key}" for key in item}
    assert MORE_STRIPPED not in result.fields_stripped
    assert result.stripped_count == 2 * len(item)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"x": 1}, "object where a scalar is allowed"),
        ([1, 2], "array where a scalar is allowed"),
        ({}, "object where a scalar is allowed"),
    ],
)
def test_scalar_path_never_allows_a_container(value: JSONValue, reason: str) -> None:
    result = run(plan("a.b"), {"a": {"b": value}}, trace=True)
    assert result.document == {"a": {}}
    assert result.fields_stripped == ("a.b",)
    assert result.trace == (FieldDecision("a.b", "stripped", reason),)


@pytest.mark.parametrize("value", ["text", 0, -1.5, True, False, None])
def test_scalar_path_keeps_every_kind_of_scalar(value: JSONValue) -> None:
    assert run(plan("a"), {"a": value}).document == {"a": value}


def test_array_path_keeps_scalar_elements_and_removes_the_rest() -> None:
    doc: dict[str, JSONValue] = {"a": {"b": [1, "x", {"k": 1}, None, [2], True]}}
    result = run(plan("a.b[]"), doc)
    assert result.document == {"a": {"b": [1, "x", None, True]}}
    assert result.fields_sent == ("a.b[]",)
    assert result.fields_stripped == ("a.b[]",)
    assert result.stripped_count == 2


def test_key_in_every_element() -> None:
    doc: dict[str, JSONValue] = {
        "items": [
            {"amount": 10, "secret": "s"},
            "not an object",
            {"secret": "only"},
            {"amount": {"nested": 1}},
            {"amount": 20},
            None,
        ]
    }
    result = run(plan("items[].amount"), doc)
    assert result.document == {"items": [{"amount": 10}, {}, {}, {"amount": 20}]}
    assert result.fields_sent == ("items[].amount",)
    assert result.fields_stripped == ("items[]", "items[].amount", "items[].secret")
    assert result.stripped_count == 5


def test_nested_arrays() -> None:
    doc: dict[str, JSONValue] = {"grid": [[1, 2], 3, [{"x": 1}, 4], []]}
    assert run(plan("grid[][]"), doc).document == {"grid": [[1, 2], [4], []]}


def test_whole_subtree() -> None:
    doc: dict[str, JSONValue] = {
        "meta": {"a": [1, {"b": None}], "c": {"d": "e"}},
        "other": 1,
    }
    result = run(plan(AllowRule("meta.**", "device.device_info")), doc)
    assert result.document == {"meta": {"a": [1, {"b": None}], "c": {"d": "e"}}}
    assert result.fields_sent == ("meta.**",)
    assert result.categories_sent == ("device.device_info",)
    assert result.fields_stripped == ("other",)


@pytest.mark.parametrize("value", ["scalar", 3, None, [1, [2]], {}])
def test_whole_subtree_allows_any_value(value: JSONValue) -> None:
    assert run(plan("a.b.**"), {"a": {"b": value}}).document == {"a": {"b": value}}


def test_whole_subtree_of_every_element() -> None:
    doc: dict[str, JSONValue] = {"items": [{"a": {"b": 1}}, 2, [3]]}
    assert run(plan("items[].**"), doc).document == doc


def test_whole_subtree_copes_with_deep_nesting() -> None:
    deep: JSONValue = "bottom"
    for _ in range(5000):
        deep = {"d": [deep]}
    result = run(plan("a.**"), {"a": deep})
    walked = result.document["a"]
    for _ in range(5000):
        assert isinstance(walked, dict)
        inner = walked["d"]
        assert isinstance(inner, list)
        walked = inner[0]
    assert walked == "bottom"


def test_keys_are_exact_and_case_sensitive() -> None:
    doc: dict[str, JSONValue] = {"Name": "A", "name": "b", "name ": "c", "nam": "d"}
    assert run(plan("name"), doc).document == {"name": "b"}


def test_a_key_containing_a_dot_is_never_matched_by_a_nested_path() -> None:
    doc: dict[str, JSONValue] = {"a.b": 1, "a": {"b": 2}}
    assert run(plan("a.b"), doc).document == {"a": {"b": 2}}


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"a": "text"}, "string where an object is expected"),
        ({"a": None}, "null where an object is expected"),
        ({"a": [{"b": 1}]}, "array where an object is expected"),
        ({"a": 5}, "number where an object is expected"),
    ],
)
def test_a_value_of_the_wrong_kind_for_an_object_place_is_stripped(
    doc: dict[str, JSONValue], reason: str
) -> None:
    result = run(plan("a.b"), doc, trace=True)
    assert result.document == {}
    assert result.fields_stripped == ("a",)
    assert result.trace == (FieldDecision("a", "stripped", reason),)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"0": 1}, "object where an array is expected"),
        ("1,2", "string where an array is expected"),
        (True, "boolean where an array is expected"),
    ],
)
def test_a_value_of_the_wrong_kind_for_an_array_place_is_stripped(
    value: JSONValue, reason: str
) -> None:
    result = run(plan("a[]"), {"a": value}, trace=True)
    assert result.document == {}
    assert result.trace == (FieldDecision("a", "stripped", reason),)


# --- apply: order, emptiness, not touching the input --------------------------------------------


def test_output_keeps_the_input_key_order_not_the_rule_order() -> None:
    doc: dict[str, JSONValue] = {"z": 1, "drop": 0, "m": {"y": 2, "x": 3, "w": 4}, "a": 5}
    result = run(plan("a", "m.x", "m.y", "z"), doc)
    assert list(result.document) == ["z", "m", "a"]
    m = result.document["m"]
    assert isinstance(m, dict)
    assert list(m) == ["y", "x"]


def test_containers_left_empty_stay_and_absent_ones_are_not_invented() -> None:
    doc: dict[str, JSONValue] = {"a": {"secret": 1}, "items": [{"secret": 2}], "c": []}
    result = run(plan("a.b", "items[].ok", "c[]", "missing.x", "gone[]"), doc)
    assert result.document == {"a": {}, "items": [{}], "c": []}


def test_nothing_allowed_gives_an_empty_object() -> None:
    result = run(compile_plan([]), {"a": 1, "b": {"c": 2}}, {"page": "1"})
    assert result.document == {}
    assert result.query == {}
    assert result.fields_sent == ()
    assert result.fields_stripped == ("a", "b", "query.page")
    assert result.stripped_count == 3


def test_apply_never_mutates_or_shares_the_input() -> None:
    doc: dict[str, JSONValue] = {
        "a": {"b": 1, "c": 2},
        "items": [{"x": 1, "y": 2}],
        "meta": {"deep": [{"k": "v"}]},
    }
    before = copy.deepcopy(doc)
    p = plan(AllowRule("a.b", None, Hash()), "items[].x", "meta.**")
    result = run(p, doc)
    assert doc == before
    out = result.document
    assert isinstance(out["meta"], dict)
    out["meta"]["deep"] = "changed"
    assert isinstance(out["items"], list)
    out["items"].append(1)
    assert doc == before


# --- apply: transforms ---------------------------------------------------------------------------


def test_transforms_are_applied_and_reported() -> None:
    p = plan(
        AllowRule("applicant.id_number", "identity.id_number", Hash()),
        AllowRule("applicant.phone", "contact.phone", Mask(keep_last=4)),
        AllowRule("applicant.income", "financial.income", GeneralizeBucket(5000)),
        AllowRule("applicant.birth_date", "identity.birth_date", GeneralizeYear()),
        AllowRule("applicant.note", "business.note", Redact()),
        AllowRule("applicant.name", "identity.name"),
    )
    doc: dict[str, JSONValue] = {
        "applicant": {
            "name": "张三",
            "id_number": "110101199003074477",
            "phone": "13800138000",
            "income": 18000,
            "birth_date": "1990-03-07",
            "note": "anything",
            "email": "zhang@example.com",
        }
    }
    result = run(p, doc)
    assert result.document == {
        "applicant": {
            "name": "张三",
            "id_number": hmac_hex("110101199003074477"),
            "phone": "*******8000",
            "income": "15000-19999",
            "birth_date": "1990",
            "note": "[REDACTED]",
        }
    }
    assert result.fields_sent == (
        "applicant.birth_date",
        "applicant.id_number",
        "applicant.income",
        "applicant.name",
        "applicant.note",
        "applicant.phone",
    )
    assert result.fields_transformed == (
        "applicant.birth_date",
        "applicant.id_number",
        "applicant.income",
        "applicant.note",
        "applicant.phone",
    )
    assert result.fields_stripped == ("applicant.email",)
    assert result.categories_sent == (
        "business.note",
        "contact.phone",
        "financial.income",
        "identity.birth_date",
        "identity.id_number",
        "identity.name",
    )


def test_transform_applies_to_every_array_element() -> None:
    p = plan(AllowRule("ids[]", None, Hash()), AllowRule("items[].amount", None, Redact()))
    doc: dict[str, JSONValue] = {"ids": ["a", 7], "items": [{"amount": 1}, {"amount": 2}]}
    assert run(p, doc).document == {
        "ids": [hmac_hex("a"), hmac_hex("7")],
        "items": [{"amount": "[REDACTED]"}, {"amount": "[REDACTED]"}],
    }


def test_untransformable_values_are_stripped_never_sent_raw() -> None:
    p = plan(
        AllowRule("birth", "identity.birth_date", GeneralizeYear()),
        AllowRule("incomes[]", "financial.income", GeneralizeBucket(1000)),
    )
    doc: dict[str, JSONValue] = {"birth": "07/03/1990", "incomes": [1500, "lots", 2500, True]}
    result = run(p, doc, trace=True)
    assert result.document == {"incomes": ["1000-1999", "2000-2999"]}
    assert result.fields_stripped == ("birth", "incomes[]")
    assert result.fields_transformed == ("incomes[]",)
    assert result.stripped_count == 3
    stripped = [d for d in result.trace if d.action == "stripped"]
    assert [d.path for d in stripped] == ["birth", "incomes[1]", "incomes[3]"]
    assert all(d.reason.startswith("untransformable: ") for d in stripped)
    assert "ISO date" in stripped[0].reason


def test_null_under_a_transform_stays_null_and_counts_as_kept() -> None:
    p = plan(AllowRule("a", "identity.name", Hash()))
    result = run(p, {"a": None}, trace=True)
    assert result.document == {"a": None}
    assert result.fields_sent == ("a",)
    assert result.fields_transformed == ()
    assert result.trace == (FieldDecision("a", "kept", "allowed by a (identity.name)"),)


# --- apply: query parameters ---------------------------------------------------------------------


def test_query_plan_keeps_named_parameters_in_input_order() -> None:
    p = plan(
        AllowRule("query.page", "business.reference"),
        AllowRule("query.user", "account.user_id", Hash()),
        AllowRule("query.amount", None, GeneralizeBucket(100)),
        AllowRule("query.when", None, GeneralizeYear()),
        "a",
    )
    query = {
        "debug": "1",
        "when": "2024-01-02",
        "user": "u-1",
        "page": "2",
        "amount": "250",
        "Page": "3",
    }
    result = run(p, {"a": 1}, query)
    assert result.query == {
        "when": "2024",
        "user": hmac_hex("u-1"),
        "page": "2",
        "amount": "200-299",
    }
    assert list(result.query) == ["when", "user", "page", "amount"]
    assert result.fields_stripped == ("query.Page", "query.debug")
    assert result.fields_sent == ("a", "query.amount", "query.page", "query.user", "query.when")
    assert result.fields_transformed == ("query.amount", "query.user", "query.when")
    assert result.categories_sent == ("account.user_id", "business.reference")


def test_query_parameter_that_cannot_be_transformed_is_stripped() -> None:
    p = plan(AllowRule("query.amount", None, GeneralizeBucket(100)))
    result = run(p, {}, {"amount": "a lot"}, trace=True)
    assert result.query == {}
    assert result.fields_stripped == ("query.amount",)
    assert result.trace[0].path == "query.amount"
    assert result.trace[0].reason.startswith("untransformable")


def test_query_rules_do_not_allow_body_fields() -> None:
    result = run(plan("query.page"), {"query": {"page": 1}, "page": 2}, {"page": "1"})
    assert result.document == {}
    assert result.query == {"page": "1"}


# --- apply: scanner ------------------------------------------------------------------------------


@dataclass
class FakeScanner:
    """Replaces the word SECRET, counting it under `test.secret` unless that is allowed."""

    calls: list[tuple[str, frozenset[str]]]

    def __call__(self, text: str, allowed: frozenset[str]) -> tuple[str, Mapping[str, int]]:
        self.calls.append((text, allowed))
        if "test.secret" in allowed or "SECRET" not in text:
            return text, {}
        return text.replace("SECRET", "[REDACTED:test.secret]"), {
            "test.secret": text.count("SECRET")
        }


def test_a_trajectory_field_keeps_its_coordinates_and_no_other_field_does() -> None:
    # A trajectory is precise locations one after another: redacted, it would be none. Its
    # field keeps them, and only them.
    p = plan(
        AllowRule("track[]", "location.trajectory"),
        AllowRule("spot", "location.precise"),
        AllowRule("note", "business.note"),
    )
    point = "31.230416,121.473701"
    doc: dict[str, JSONValue] = {
        "track": [point, f"{point} 13800138000"],
        "spot": point,
        "note": f"at {point}",
    }
    result = p.apply(doc, {}, hash_key=KEY, scanner=scan)
    assert result.document == {
        "track": [point, f"{point} [REDACTED:contact.phone]"],
        "spot": point,
        "note": "at [REDACTED:location.precise]",
    }


def test_scanner_sees_every_kept_untransformed_string_with_its_allowed_categories() -> None:
    p = plan(
        AllowRule("note", "business.note"),
        AllowRule("plain", None),
        AllowRule("ok", "test.secret"),
        AllowRule("hashed", "identity.name", Hash()),
        AllowRule("n", "business.note"),
        AllowRule("tags[]", "business.reference"),
        AllowRule("meta.**", "device.device_info"),
        AllowRule("query.q", "business.note"),
    )
    doc: dict[str, JSONValue] = {
        "note": "a SECRET and a SECRET",
        "plain": "SECRET",
        "ok": "SECRET",
        "hashed": "SECRET",
        "n": 5,
        "tags": ["t1", "SECRET"],
        "meta": {"x": ["SECRET", {"y": "z"}], "k": 1},
        "dropped": "SECRET",
    }
    scanner = FakeScanner([])
    result = p.apply(doc, {"q": "SECRET"}, hash_key=KEY, scanner=scanner)
    note = frozenset({"business.note"})
    assert sorted(scanner.calls) == sorted(
        [
            ("a SECRET and a SECRET", note),
            ("SECRET", frozenset()),
            ("SECRET", frozenset({"test.secret"})),
            ("t1", frozenset({"business.reference"})),
            ("SECRET", frozenset({"business.reference"})),
            ("SECRET", frozenset({"device.device_info"})),
            ("z", frozenset({"device.device_info"})),
            ("SECRET", note),
            # A subtree's keys are free text too.
            ("x", frozenset({"device.device_info"})),
            ("k", frozenset({"device.device_info"})),
            ("y", frozenset({"device.device_info"})),
        ]
    )
    r = "[REDACTED:test.secret]"
    assert result.document == {
        "note": f"a {r} and a {r}",
        "plain": r,
        "ok": "SECRET",
        "hashed": hmac_hex("SECRET"),
        "n": 5,
        "tags": ["t1", r],
        "meta": {"x": [r, {"y": "z"}], "k": 1},
    }
    assert result.query == {"q": r}
    assert result.pii_redactions == {"test.secret": 6}


def test_redactions_appear_in_the_trace() -> None:
    p = plan(AllowRule("note", "business.note"), AllowRule("meta.**", None))
    doc: dict[str, JSONValue] = {"note": "SECRET", "meta": {"a": "SECRET SECRET"}}
    result = p.apply(doc, {}, hash_key=KEY, scanner=FakeScanner([]), trace=True)
    assert result.trace == (
        FieldDecision("note", "kept", "allowed by note (business.note); redacted 1 test.secret"),
        FieldDecision("meta", "kept", "allowed by meta.**; redacted 2 test.secret"),
    )


# --- apply: reporting and trace ------------------------------------------------------------------


def test_report_uses_generic_paths_and_counts_occurrences() -> None:
    p = plan(AllowRule("items[].amount", "business.transaction"))
    doc: dict[str, JSONValue] = {
        "items": [{"amount": 1, "secret": "a"}, {"amount": 2, "secret": "b", "x": {"y": 1}}],
        "applicant": {"email": "e@example.com"},
    }
    result = run(p, doc)
    assert result.fields_sent == ("items[].amount",)
    assert result.fields_stripped == ("applicant", "items[].secret", "items[].x")
    assert result.fields_transformed == ()
    assert result.stripped_count == 4
    assert result.categories_sent == ("business.transaction",)
    assert result.pii_redactions == {}
    assert result.trace == ()


def test_trace_names_concrete_paths_actions_and_reasons() -> None:
    p = plan(
        AllowRule("items[].amount", "business.transaction"),
        AllowRule("applicant.id", "identity.id_number", Hash()),
        AllowRule("tags[]", None),
        AllowRule("query.page", "business.reference"),
    )
    doc: dict[str, JSONValue] = {
        "applicant": {"id": "X1", "email": "e"},
        "items": [{"amount": 1}, {"amount": 2, "secret": 3}, 4],
        "tags": ["a", {"b": 1}],
    }
    result = run(p, doc, {"page": "1", "debug": "true"}, trace=True)
    assert result.trace == (
        FieldDecision(
            "applicant.id",
            "transformed",
            "hash; allowed by applicant.id (identity.id_number)",
        ),
        FieldDecision("applicant.email", "stripped", "not in the allow-list"),
        FieldDecision(
            "items[0].amount", "kept", "allowed by items[].amount (business.transaction)"
        ),
        FieldDecision(
            "items[1].amount", "kept", "allowed by items[].amount (business.transaction)"
        ),
        FieldDecision("items[1].secret", "stripped", "not in the allow-list"),
        FieldDecision("items[2]", "stripped", "number where an object is expected"),
        FieldDecision("tags[0]", "kept", "allowed by tags[]"),
        FieldDecision("tags[1]", "stripped", "object where a scalar is allowed"),
        FieldDecision("query.page", "kept", "allowed by query.page (business.reference)"),
        FieldDecision("query.debug", "stripped", "not in the allow-list"),
    )


def test_trace_does_not_change_the_result() -> None:
    p = plan(AllowRule("a[].b", None, Mask(keep_first=1)), "c")
    doc: dict[str, JSONValue] = {"a": [{"b": "xyz", "z": 1}, 2], "c": {"d": 1}, "e": 1}
    plain = run(p, doc)
    traced = run(p, doc, trace=True)
    assert traced.document == plain.document
    assert traced.fields_sent == plain.fields_sent
    assert traced.fields_stripped == plain.fields_stripped
    assert traced.stripped_count == plain.stripped_count
    assert len(traced.trace) == 5


# --- select --------------------------------------------------------------------------------------


def test_select() -> None:
    doc: dict[str, JSONValue] = {
        "applicant": {"user_id": "u1", "birth_date": "1990-01-01"},
        "items": [{"user_id": "a"}, {"other": 1}, "x", {"user_id": "b"}],
        "grid": [[1, 2], [3], 4],
    }
    assert select(doc, "applicant.user_id") == ["u1"]
    assert select(doc, "items[].user_id") == ["a", "b"]
    assert select(doc, "grid[][]") == [1, 2, 3]
    assert select(doc, "grid[]") == [[1, 2], [3], 4]
    assert select(doc, "applicant.**") == [doc["applicant"]]
    assert select(doc, "applicant") == [doc["applicant"]]
    assert select(doc, "applicant.missing") == []
    assert select(doc, "applicant.user_id.deeper") == []
    assert select(doc, "items.user_id") == []
    assert select(doc, "applicant[]") == []  # an object's keys are no elements
    assert select(doc, parse_path("items[].user_id")) == ["a", "b"]


def test_select_reads_query_prefixed_paths_as_body_keys() -> None:
    doc: dict[str, JSONValue] = {"query": {"user_id": "body", "a": {"b": 1}}}
    assert select(doc, "query.user_id") == ["body"]
    assert select(doc, "query.a.b") == [1]


def test_select_refuses_bad_syntax() -> None:
    with pytest.raises(PathSyntaxError, match="empty key"):
        select({}, "a..b")


# --- properties ----------------------------------------------------------------------------------

_KEYS = ["a", "b", "c", "a", "b", "c", "", "a.b", "q r"]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(alphabet="abx-:0129", max_size=6)
    | st.sampled_from(["1990-03-07", "2024-02-30", "2000-01-01T10:00:00Z"])
)
_json: st.SearchStrategy[JSONValue] = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS), children, max_size=4)
    ),
    max_leaves=24,
)
_documents = st.dictionaries(st.sampled_from(_KEYS), _json, max_size=4)
_transforms: st.SearchStrategy[Transform | None] = st.sampled_from(
    [
        None,
        None,
        None,
        Hash(),
        Redact(),
        Mask(keep_first=1, keep_last=2),
        GeneralizeYear(),
        GeneralizeBucket(7),
    ]
)
Generic = tuple[Segment, ...]


def _generic_paths(doc: JSONValue) -> set[Generic]:
    """Every place in the document, as generic segments (keys, and [] for array elements)."""
    found: set[Generic] = set()
    pending: list[tuple[Generic, JSONValue]] = [((), doc)]
    while pending:
        where, value = pending.pop()
        if where:
            found.add(where)
        if isinstance(value, dict):
            pending.extend(((*where, Key(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            pending.extend(((*where, Each()), v) for v in value)
    return found


def _spell(segments: Sequence[Segment]) -> str:
    text = ""
    for segment in segments:
        if isinstance(segment, Key):
            text += ("." if text else "") + segment.name
        elif isinstance(segment, Each):
            text += "[]"
        else:
            text += ".**"
    return text


def _writable(segments: Sequence[Segment]) -> bool:
    return (
        bool(segments)
        and isinstance(segments[0], Key)
        and all(
            isinstance(s, Each) or (isinstance(s, Key) and s.name and " " not in s.name)
            for s in segments
            if not isinstance(s, Subtree)
        )
        and not any(isinstance(s, Key) and "." in s.name for s in segments)
        and not _spell(segments).startswith("query.")
    )


_segments: list[Segment] = [Key("a"), Key("b"), Key("c"), Key("d"), Each()]
_random_paths: st.SearchStrategy[Generic] = st.lists(
    st.sampled_from(_segments), min_size=1, max_size=4
).map(tuple)


@st.composite
def _case(draw: st.DrawFn) -> tuple[dict[str, JSONValue], list[AllowRule]]:
    doc = draw(_documents)
    holding_scalars = {where for where, _ in _scalars_in_order(doc)}
    occurring = sorted((p for p in _generic_paths(doc) if _writable(p)), key=_spell)
    candidates: list[Generic] = []
    for where in draw(st.permutations(occurring)):
        choice = draw(st.sampled_from(["skip", "scalar", "scalar", "scalar", "subtree"]))
        if choice == "scalar" and where in holding_scalars:
            candidates.append(where)
        elif choice != "skip":
            candidates.append((*where, Subtree()))
    candidates.extend(draw(st.lists(_random_paths, max_size=3)))
    rules: list[AllowRule] = []
    for segments in candidates:
        if not _writable(segments):
            continue
        whole = isinstance(segments[-1], Subtree)
        transform = None if whole else draw(_transforms)
        category = draw(st.sampled_from([None, "cat.one", "cat.two"]))
        candidate = AllowRule(_spell(segments), category, transform)
        try:
            compile_plan([*rules, candidate])
        except PathSyntaxError:
            continue
        rules.append(candidate)
    return doc, rules


def _rule_for(rules: Sequence[AllowRule], where: Generic) -> tuple[AllowRule | None, bool]:
    """The rule allowing a scalar at `where`, and whether it is a whole-subtree rule."""
    for rule in rules:
        segments = parse_path(rule.path)
        if isinstance(segments[-1], Subtree):
            if where[: len(segments) - 1] == segments[:-1]:
                return rule, True
        elif segments == where:
            return rule, False
    return None, False


def _names_place(rules: Sequence[AllowRule], where: Generic) -> bool:
    """Whether a rule leads through `where`, ends at it, or allows a whole subtree holding it."""
    for rule in rules:
        segments = parse_path(rule.path)
        if segments[: len(where)] == where:
            return True
        if isinstance(segments[-1], Subtree) and where[: len(segments) - 1] == segments[:-1]:
            return True
    return False


def _scalars_in_order(doc: JSONValue) -> list[tuple[Generic, JSONValue]]:
    """Every scalar in document order, with its generic place."""
    out: list[tuple[Generic, JSONValue]] = []

    def walk(where: Generic, value: JSONValue) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk((*where, Key(k)), v)
        elif isinstance(value, list):
            for v in value:
                walk((*where, Each()), v)
        else:
            out.append((where, value))

    walk((), doc)
    return out


def _expected_scalars(
    doc: dict[str, JSONValue], rules: Sequence[AllowRule]
) -> list[tuple[Generic, JSONValue]]:
    expected: list[tuple[Generic, JSONValue]] = []
    for where, value in _scalars_in_order(doc):
        rule, _ = _rule_for(rules, where)
        if rule is None:
            continue
        if rule.transform is None or value is None:
            expected.append((where, value))
            continue
        try:
            expected.append((where, apply_transform(rule.transform, value, KEY)))
        except Untransformable:
            continue
    return expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_filter_keeps_exactly_what_the_allow_list_permits(
    case: tuple[dict[str, JSONValue], list[AllowRule]],
) -> None:
    doc, rules = case
    before = copy.deepcopy(doc)
    p = compile_plan(rules)
    result = p.apply(doc, {}, hash_key=KEY)  # (4) never raises
    assert doc == before
    out_scalars = _scalars_in_order(result.document)
    # (1) every scalar in the output lies at a place the allow-list permits
    for where, _ in out_scalars:
        assert _rule_for(rules, where)[0] is not None, _spell(where)
    # (2) every allowed scalar of the input is there, in order, transformed as declared
    assert out_scalars == _expected_scalars(doc, rules)
    # (3) the output holds no key the plan does not name
    for where in _generic_paths(result.document):
        assert _names_place(rules, where), _spell(where)
    traced = p.apply(doc, {}, hash_key=KEY, trace=True)
    assert traced.document == result.document
    assert traced.fields_stripped == result.fields_stripped
    assert sum(d.action == "stripped" for d in traced.trace) == result.stripped_count


@settings(max_examples=200, deadline=None)
@given(_documents, st.lists(_random_paths, max_size=5))
def test_filter_never_raises_on_arbitrary_allow_lists(
    doc: dict[str, JSONValue], paths: list[Generic]
) -> None:
    rules: list[AllowRule] = []
    for segments in paths:
        candidate = AllowRule(_spell(segments), None, Hash() if len(segments) % 2 else None)
        try:
            compile_plan([*rules, candidate])
        except PathSyntaxError:
            continue
        rules.append(candidate)
    result = compile_plan(rules).apply(doc, {"a": "1", "z": "2"}, hash_key=KEY, trace=True)
    assert set(result.fields_sent) <= {r.path for r in rules}
    for where in _generic_paths(result.document):
        assert _names_place(rules, where)


@settings(max_examples=100, deadline=None)
@given(st.lists(_random_paths, min_size=1, max_size=6))
def test_spelled_paths_parse_back(paths: list[Generic]) -> None:
    for segments in paths:
        if _writable(segments):
            assert parse_path(_spell(segments)) == segments


def test_a_subtree_keeps_no_identifier_in_a_key_or_an_integer() -> None:
    p = plan(AllowRule("meta.**", "device.device_info"))
    doc: dict[str, JSONValue] = {
        "meta": {
            "13800138000": 1,
            "x": 110105201503171009,  # a resident ID number, sent as a number
            "cards": [6222021234567894, -13800138000],
            "small": 999_999,
            "count": 13800138,  # seven digits, but no identifier
            "phone 13800138000": "13900139000",
            "[REDACTED:contact.phone]": "first",  # what a redacted key would collide with
        }
    }
    result = p.apply(doc, {}, hash_key=KEY, scanner=scan)
    phone, card = "[REDACTED:contact.phone]", "[REDACTED:financial.bank_account]"
    assert result.document == {
        "meta": {
            phone: 1,
            "x": "[REDACTED:identity.id_number]",
            "cards": [card, f"-{phone}"],
            "small": 999_999,
            "count": 13800138,
            f"phone {phone}": phone,
        }
    }
    assert result.pii_redactions == {
        "contact.phone": 4,
        "identity.id_number": 1,
        "financial.bank_account": 1,
    }


def test_a_subtree_keeps_no_identifier_in_a_whole_float() -> None:
    # The same number as an integer: 13800138000.0 and 1.3800138e10 are a phone number too.
    p = plan(AllowRule("meta.**", "device.device_info"))
    doc: dict[str, JSONValue] = {"meta": {"b": 13800138000.0, "c": 1.3800138e10, "d": 1380013.8}}
    result = p.apply(doc, {}, hash_key=KEY, scanner=scan)
    phone = "[REDACTED:contact.phone]"
    assert result.document == {"meta": {"b": phone, "c": phone, "d": 1380013.8}}
    assert result.pii_redactions == {"contact.phone": 2}


def test_the_text_a_mask_keeps_is_scanned_first() -> None:
    # A preview of a note (its start kept): the phone number in it went out whole, where the
    # same field without a transform had it redacted.
    note = "call the customer on 13812345678 about the booking"
    p = plan(
        AllowRule("note", "business.note", Mask(keep_first=40)),
        AllowRule("phone", "contact.phone", Mask(keep_last=4)),
        AllowRule("query.memo", "business.note", Mask(keep_first=40)),
    )
    doc: dict[str, JSONValue] = {"note": note, "phone": "13812345678"}
    result = p.apply(doc, {"memo": note}, hash_key=KEY, scanner=scan, trace=True)
    scanned = "call the customer on [REDACTED:contact.phone] about the booking"
    masked = scanned[:40] + "*" * (len(scanned) - 40)
    assert result.document == {"note": masked, "phone": "*******5678"}
    assert result.query == {"memo": masked}
    assert result.pii_redactions == {"contact.phone": 2}  # the phone's own field is its category
    assert result.fields_transformed == ("note", "phone", "query.memo")
    [decision] = [d for d in result.trace if d.path == "note"]
    assert "contact.phone" in decision.reason


def test_a_query_value_is_hashed_and_masked_as_written_not_read_as_a_number() -> None:
    # Read as numbers, "1.50" and "1.99" would both hash as 1, and "1e3" mask as "**00".
    p = plan(
        AllowRule("query.amt", "financial.income", Hash()),
        AllowRule("query.ref", "business.reference", Mask(keep_last=2)),
    )
    result = p.apply({}, {"amt": "1.50", "ref": "1e3"}, hash_key=KEY, scanner=scan)
    assert result.query == {"amt": hmac_hex("1.50"), "ref": "*e3"}
    assert result.fields_transformed == ("query.amt", "query.ref")


def test_a_query_number_past_64_bits_is_bucketed_exactly() -> None:
    p = plan(AllowRule("query.amt", "financial.income", GeneralizeBucket(5000)))
    result = p.apply({}, {"amt": "99999999999999999999999999"}, hash_key=KEY, scanner=scan)
    assert result.query == {"amt": "99999999999999999999995000-99999999999999999999999999"}


@pytest.mark.parametrize(
    ("text", "bucket"),
    [
        ("9999999999999999.9", "9999999999999000-9999999999999999"),  # the double: 1e16
        ("999.99999999999999999", "0-999"),  # the double: 1000.0
        ("-0.00000000000000000001", "-1000--1"),
        ("1e-400", "0-999"),  # the double: 0.0
        ("-1e-400", "-1000--1"),  # the double: -0.0, which went in 0-999
        ("-0.0", "0-999"),
        ("18500.5", "18000-18999"),
        ("1.85E4", "18000-18999"),
    ],
)
def test_a_query_number_with_a_fraction_is_bucketed_by_its_exact_value(
    text: str, bucket: str
) -> None:
    p = plan(AllowRule("query.amt", "financial.income", GeneralizeBucket(1000)))
    result = p.apply({}, {"amt": text}, hash_key=KEY, scanner=scan)
    assert result.query == {"amt": bucket}


@pytest.mark.parametrize("text", ["1e400", "-1e309", "1.5.5", "0x10", "1e", "+1.5", ".5"])
def test_a_query_value_that_is_no_finite_json_number_is_not_bucketed(text: str) -> None:
    p = plan(AllowRule("query.amt", "financial.income", GeneralizeBucket(1000)))
    result = p.apply({}, {"amt": text}, hash_key=KEY, scanner=scan)
    assert result.query == {}
    assert result.fields_stripped == ("query.amt",)


@given(
    sign=st.sampled_from(["", "-"]),
    digit=st.sampled_from("123456789"),
    length=st.integers(1, 4400),
    size=st.sampled_from([1, 3, 5000, 10**15]),
)
@example(sign="-", digit="9", length=309, size=5000)
@example(sign="", digit="1", length=310, size=3)
@settings(max_examples=200, deadline=None)
def test_a_whole_query_number_is_bucketed_exactly_up_to_309_digits_and_stripped_beyond(
    sign: str, digit: str, length: int, size: int
) -> None:
    # As many digits as the largest double has before its point: past them no JSON number
    # reaches, and past 4,300 Python would not write the bucket's bounds out.
    text = sign + digit * length
    p = plan(AllowRule("query.amt", "financial.income", GeneralizeBucket(size)))
    result = p.apply({}, {"amt": text}, hash_key=KEY, scanner=scan, trace=True)
    if length <= 309:
        low = int(text) // size * size
        assert result.query == {"amt": f"{low}-{low + size - 1}"}
        assert result.fields_transformed == ("query.amt",)
    else:
        assert result.query == {}
        assert result.fields_stripped == ("query.amt",)
        [decision] = result.trace
        assert decision.reason.startswith("untransformable")


def test_stripped_key_names_that_could_be_personal_data_are_not_logged() -> None:
    plan = compile_plan([AllowRule("a.keep", "business.note")])
    doc: dict[str, JSONValue] = {
        "a": {
            "keep": 1,
            "13800138000": "x",
            "王小明": "y",
            "wang@example.com": "z",
            "tel_138-0013-8000": "w",
            "born_1990_03_07": "v",
            # Five digits in all make a key unloggable, four do not.
            "zip_100_01": "u",
            "unit_1234": "t",
            "note": 2,
            "line_2": 3,
        }
    }
    result = plan.apply(doc, {}, hash_key=b"k" * 32)
    assert result.document == {"a": {"keep": 1}}
    assert result.fields_stripped == ("a.<key>", "a.line_2", "a.note", "a.unit_1234")
    assert result.stripped_count == 9
    assert not any("13800138000" in p or "王" in p or "@" in p for p in result.fields_stripped)


def test_a_stripped_key_name_past_64_characters_is_not_logged() -> None:
    longest, too_long = "n" * 64, "n" * 65
    result = run(plan("keep"), {"keep": 1, longest: 2, too_long: 3})
    assert result.document == {"keep": 1}
    assert result.fields_stripped == ("<key>", longest)
    assert result.stripped_count == 2


def test_stripped_query_parameter_names_are_logged_like_body_keys() -> None:
    plan = compile_plan([AllowRule("query.page", "business.note")])
    query = {"page": "2", "13800138000": "1", "wang@example.com": "1", "sort": "asc"}
    result = plan.apply({}, query, hash_key=b"k" * 32)
    assert result.query == {"page": "2"}
    assert result.fields_stripped == ("query.<key>", "query.sort")
    assert result.stripped_count == 3
