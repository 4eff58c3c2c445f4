"""Contract terms: validity window, minors, consent, rate and daily volume, at their boundaries."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml
from aiohttp import ClientResponse
from aiohttp.test_utils import make_mocked_request
from conftest import BASE_CONTRACT, GatewayFactory, assert_refused, contract, stopped_clock
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from tokens import SigningKey, mint, rsa_key

import gateway.pipeline as pipeline_module
from gateway.consent import ConsentRegistry
from gateway.contractset import load_contract_set
from gateway.errors import (
    ConsentRequired,
    ContractInactive,
    MalformedBody,
    MinorDenied,
    QuotaExceeded,
    RateLimited,
    StartupError,
)
from gateway.explain import explain
from gateway.jsonbody import JSONValue
from gateway.pipeline import Flow, check_contract_at
from gateway.policy import PartnerPolicy, Policy, PolicyError, RoutePolicy, compile_policy
from gateway.settings import Settings
from gateway.sharelog.record import ShareRecord
from gateway.terms import (
    DailyCounts,
    SlidingWindows,
    Subject,
    Terms,
    VolumeTaken,
    is_minor,
    rate_window,
    subjects_of,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def resident_id(born: date, sequence: str = "123") -> str:
    """A valid 18-character mainland resident ID number (Beijing Chaoyang) for `born`."""
    body = f"110105{born:%Y%m%d}{sequence}"
    return body + ID_CHECK[sum(int(d) * w for d, w in zip(body, ID_WEIGHTS, strict=True)) % 11]


def with_wrong_check_digit(number: str) -> str:
    return number[:17] + ("1" if number[17] == "0" else "0")


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def seconds_to_midnight(now: datetime) -> float:
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return (midnight - now).total_seconds()


def today_in_shanghai() -> date:
    return datetime.now(SHANGHAI).date()


# A child of ten and an adult: far enough from any boundary that the request date cannot matter.
CHILD_BORN = years_before(today_in_shanghai(), 10)
ADULT_BORN = years_before(today_in_shanghai(), 30)

BATCH_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/batch",
    "purpose": "credit_assessment",
    "records": "applicants[]",
    "subject": "applicants[].user_id",
    "birth_date": "applicants[].birth_date",
    "fields": [
        {"path": "applicants[].name", "category": "identity.name"},
        {"path": "applicants[].id_number", "category": "identity.id_number", "transform": "hash"},
    ],
}
BIRTH_DATE_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/children",
    "purpose": "credit_assessment",
    "subject": "child.user_id",
    "birth_date": "child.birth_date",
    "fields": [{"path": "child.name", "category": "identity.name"}],
}
IDS_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/lookup",
    "purpose": "credit_assessment",
    "records": "ids[]",
    "subject": "ids[]",
    "fields": [{"path": "ids[]", "category": "identity.id_number", "transform": "hash"}],
}
QUERY_ROUTE: dict[str, Any] = {
    "method": "GET",
    "path": "/v1/people",
    "purpose": "credit_assessment",
    "subject": "query.user_id",
    "birth_date": "query.born",
    "fields": [{"path": "query.format", "category": "business.reference"}],
}
ROUTES = [*BASE_CONTRACT["routes"], BATCH_ROUTE, BIRTH_DATE_ROUTE, IDS_ROUTE, QUERY_ROUTE]
SENSITIVE_CONSENT = {"allowed": ["identity.id_number"], "consent_required": True}


def minors_contract(**terms: Any) -> dict[str, Any]:
    return contract(terms={"minors": "deny", **terms}, routes=ROUTES)


# Where a share may need its subject's consent, its route names the subject (an upload route
# without one does not load there).
SUBJECT_ROUTES = [route for route in ROUTES if "subject" in route]


def third_party_contract(**terms: Any) -> dict[str, Any]:
    return contract(
        partner={"relationship": "third_party"},
        terms={"sensitive": SENSITIVE_CONSENT, **terms},
        routes=SUBJECT_ROUTES,
    )


def applicant(user_id: str = "u-1", **fields: Any) -> dict[str, Any]:
    return {"applicant": {"user_id": user_id, "name": "Wang", **fields}, "loan_amount": 5000}


def person(user_id: str, born: date | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"user_id": user_id, "name": "Li"}
    if born is not None:
        item["birth_date"] = born.isoformat()
    return item


async def error_of(response: ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()
    error: dict[str, Any] = body["error"]
    return error


def last_record(records: list[ShareRecord]) -> ShareRecord:
    assert records, "no share record was written"
    return records[-1]


# --- a compiled policy, for tests with an explicit clock -------------------------------------


def compile_contracts(
    folder: Path, *docs: dict[str, Any], timezone: str = "Asia/Shanghai"
) -> Policy:
    folder.mkdir()
    for doc in docs:
        (folder / f"{doc['partner']['id']}.yaml").write_text(yaml.safe_dump(doc))
    settings = Settings.model_validate(
        {"contracts_dir": folder, "allow_insecure_upstreams": True, "timezone": timezone}
    )
    contracts, problems = load_contract_set(folder, settings)
    assert contracts is not None, problems
    return compile_policy(
        contracts, zone=settings.zone, master_key=b"m" * 48, environ={"ACME_TOKEN": "t"}
    )


def acme(policy: Policy) -> PartnerPolicy:
    return policy.partners["acme"]


@pytest.mark.parametrize("value", ["tok-123\n", "tok\r\nX-Evil: 1", "tok\x00", "\x1b[2Jtok"])
def test_an_upstream_secret_with_a_control_character_is_refused_at_load(
    tmp_path: Path, value: str
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "acme.yaml").write_text(yaml.safe_dump(contract()))
    settings = Settings.model_validate({"contracts_dir": folder, "allow_insecure_upstreams": True})
    contracts, problems = load_contract_set(folder, settings)
    assert contracts is not None, problems
    with pytest.raises(PolicyError) as caught:
        compile_policy(
            contracts, zone=settings.zone, master_key=b"m" * 48, environ={"ACME_TOKEN": value}
        )
    assert caught.value.problems == [
        "acme: upstream.auth: environment variable ACME_TOKEN holds a control character"
    ]
    # A tab is a character a header value may hold.
    compile_policy(
        contracts, zone=settings.zone, master_key=b"m" * 48, environ={"ACME_TOKEN": "a\tb"}
    )


async def test_a_start_without_a_partners_upstream_secret_is_refused_in_one_line(
    make_gateway: GatewayFactory,
) -> None:
    # Started, every share to the partner would go without its credentials, to be refused there.
    with pytest.raises(StartupError) as refused:
        await make_gateway(environ={"ACME_TOKEN": ""})
    assert refused.value.problems == [
        "acme: upstream.auth: environment variable ACME_TOKEN is not set"
    ]


def route_of(partner: PartnerPolicy, path: str) -> RoutePolicy:
    for entries in partner.routes.index.values():
        for _template, route in entries:
            if route.label.endswith(" " + path):
                return route
    raise LookupError(path)


# --- validity window -------------------------------------------------------------------------


@pytest.fixture
def march_policy(tmp_path: Path) -> Policy:
    doc = contract(contract={"effective": "2025-03-01", "expires": "2025-03-31"})
    return compile_contracts(tmp_path / "contracts", doc)


@pytest.mark.parametrize(
    ("moment", "in_force"),
    [
        (datetime(2025, 2, 28, 23, 59, 59, 999999, SHANGHAI), False),
        (datetime(2025, 3, 1, 0, 0, tzinfo=SHANGHAI), True),
        (datetime(2025, 3, 31, 23, 59, 59, tzinfo=SHANGHAI), True),
        (datetime(2025, 4, 1, 0, 0, tzinfo=SHANGHAI), False),
        # The same instants seen from UTC: the window follows the gateway's zone, not UTC's date.
        (datetime(2025, 2, 28, 15, 59, 59, tzinfo=UTC), False),
        (datetime(2025, 2, 28, 16, 0, tzinfo=UTC), True),
        (datetime(2025, 3, 31, 15, 59, 59, tzinfo=UTC), True),
        (datetime(2025, 3, 31, 16, 0, tzinfo=UTC), False),
    ],
)
def test_contract_is_in_force_from_effective_midnight_to_the_end_of_expires(
    march_policy: Policy, moment: datetime, in_force: bool
) -> None:
    partner = acme(march_policy)
    assert partner.in_force(moment) is in_force
    if in_force:
        check_contract_at(partner, moment)
    else:
        with pytest.raises(ContractInactive, match="valid from 2025-03-01 to 2025-03-31"):
            check_contract_at(partner, moment)


@pytest.mark.parametrize("status", ["suspended", "terminated"])
def test_a_contract_not_active_is_never_in_force(tmp_path: Path, status: str) -> None:
    doc = contract(contract={"effective": "2025-03-01", "expires": "2025-03-31", "status": status})
    partner = acme(compile_contracts(tmp_path / "contracts", doc))
    moment = datetime(2025, 3, 15, 12, 0, tzinfo=SHANGHAI)
    assert not partner.in_force(moment)
    with pytest.raises(ContractInactive, match=f"the contract is {status}"):
        check_contract_at(partner, moment)


@pytest.mark.parametrize(
    "change",
    [
        {"status": "suspended"},
        {"status": "terminated"},
        {"effective": "2020-01-01", "expires": "2020-12-31"},
        {"effective": "2098-01-01", "expires": "2099-12-31"},
    ],
    ids=["suspended", "terminated", "expired", "not-yet-effective"],
)
async def test_share_under_an_inactive_contract_is_refused(
    make_gateway: GatewayFactory, change: dict[str, str]
) -> None:
    gw = await make_gateway([contract(contract=change)])
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    await assert_refused(gw, response, 403, "contract_inactive")


# --- minors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("born", "today", "minor"),
    [
        (date(2011, 6, 15), date(2025, 6, 14), True),  # 13 years 364 days
        (date(2011, 6, 15), date(2025, 6, 15), False),  # 14 today
        (date(2011, 6, 15), date(2025, 6, 16), False),
        (date(2012, 2, 29), date(2026, 2, 28), True),  # no 29 February in 2026
        (date(2012, 2, 29), date(2026, 3, 1), False),
        (date(2012, 2, 28), date(2026, 2, 28), False),
        (date(2011, 12, 31), date(2025, 12, 31), False),
        (date(2012, 1, 1), date(2025, 12, 31), True),
        (date(2025, 6, 1), date(2025, 6, 1), True),  # born today
        (date(9986, 1, 1), date(2025, 6, 1), True),  # 14 after the last year a date can hold
        (date.max, date.max, True),
    ],
)
def test_is_minor_at_the_fourteenth_birthday(born: date, today: date, minor: bool) -> None:
    assert is_minor(born, today) is minor


@given(
    born=st.dates(min_value=date(1900, 1, 1), max_value=date(2090, 12, 31)),
    days=st.integers(min_value=0, max_value=40 * 366),
)
def test_is_minor_agrees_with_counting_completed_years(born: date, days: int) -> None:
    today = born + timedelta(days=days)
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    assert is_minor(born, today) is (age < 14)


@pytest.fixture
def minors_policy(tmp_path: Path) -> Policy:
    return compile_contracts(tmp_path / "contracts", minors_contract())


def test_birth_date_is_read_from_the_id_number_field(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    born = date(2012, 5, 6)
    doc = applicant(id_number=resident_id(born))
    assert subjects_of(route, doc, {}) == [Subject(None, "u-1", born)]


def test_birth_date_is_read_from_a_subject_id_that_is_an_id_number(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    number = resident_id(date(2013, 1, 2))
    assert subjects_of(route, applicant(user_id=number), {}) == [
        Subject(None, number, date(2013, 1, 2))
    ]


@pytest.mark.parametrize(
    ("user_born", "id_born"),
    [(date(1980, 1, 1), date(2013, 1, 2)), (date(2013, 1, 2), date(1980, 1, 1))],
    ids=["child-in-the-id-number-field", "child-in-the-subject-id"],
)
def test_the_youngest_of_several_id_numbers_counts(
    minors_policy: Policy, user_born: date, id_born: date
) -> None:
    # Not the first one found: an adult's number beside a child's must not hide the child.
    route = route_of(acme(minors_policy), "/v1/assess")
    doc = applicant(user_id=resident_id(user_born), id_number=resident_id(id_born))
    [subject] = subjects_of(route, doc, {})
    assert subject.birth_date == date(2013, 1, 2)


def test_an_id_number_sent_as_a_json_integer_gives_its_birth_date(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    number = resident_id(date(2013, 1, 2), sequence="124")
    assert number.isdigit()  # a check digit of X cannot be written as an integer
    [subject] = subjects_of(route, applicant(id_number=int(number)), {})
    assert subject.birth_date == date(2013, 1, 2)


def test_a_first_generation_id_number_gives_its_birth_date_in_the_1900s(
    minors_policy: Policy,
) -> None:
    # 15 digits, no check digit: its YYMMDD is always in the 1900s, so never a child's, and
    # beside a child's number it hides nothing (the youngest counts).
    route = route_of(acme(minors_policy), "/v1/assess")
    [subject] = subjects_of(route, applicant(id_number="110105-850304-123"), {})
    assert subject.birth_date == date(1985, 3, 4)
    doc = applicant(user_id=resident_id(date(2013, 1, 2)), id_number="110105850304123")
    [subject] = subjects_of(route, doc, {})
    assert subject.birth_date == date(2013, 1, 2)


@pytest.mark.parametrize(
    "id_number",
    [
        "11010520120506123",  # 17 characters
        "110105201205061234567",
        12345,
    ],
    ids=["too-short", "too-long", "number"],
)
def test_a_value_that_is_not_a_valid_id_number_gives_no_birth_date(
    minors_policy: Policy, id_number: object
) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    [subject] = subjects_of(route, applicant(id_number=id_number), {})
    assert subject.birth_date is None


@pytest.mark.parametrize("field", ["id_number", "user_id"])
def test_an_id_number_with_a_wrong_check_digit_gives_the_birth_date_it_states(
    minors_policy: Policy, field: str
) -> None:
    # A mistyped child's number is still about a child (and `logs subject` finds it as the
    # number it is written as).
    route = route_of(acme(minors_policy), "/v1/assess")
    mistyped = with_wrong_check_digit(resident_id(date(2012, 5, 6)))
    [subject] = subjects_of(route, applicant(**{field: mistyped}), {})
    assert subject.birth_date == date(2012, 5, 6)


@pytest.mark.parametrize(
    "number",
    [
        "110105201202301234",  # 30 February
        "990105201205061234",  # no province 99
        "110105301205061234",  # a year 30xx
    ],
)
def test_a_number_not_laid_out_as_an_id_number_gives_no_birth_date(
    minors_policy: Policy, number: str
) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    [subject] = subjects_of(route, applicant(id_number=number), {})
    assert subject.birth_date is None


def permanent_resident_id(born: date, province: str = "43", nationality: str = "760") -> str:
    """A foreign permanent resident's ID number of the 2023 edition for `born`."""
    body = f"9{province}{nationality}{born:%Y%m%d}667"
    return body + ID_CHECK[sum(int(d) * w for d, w in zip(body, ID_WEIGHTS, strict=True)) % 11]


@pytest.mark.parametrize("field", ["id_number", "user_id"])
async def test_a_childs_foreign_permanent_resident_number_is_denied(
    make_gateway: GatewayFactory, field: str
) -> None:
    gw = await make_gateway([minors_contract()])
    child = permanent_resident_id(CHILD_BORN)
    for written in (child, f"{child[:6]} {child[6:14]} {child[14:]}", f"永居证 {child}"):
        response = await gw.share("POST", "/acme/v1/assess", json=applicant(**{field: written}))
        await assert_refused(gw, response, 403, "minor_denied")
    adult = permanent_resident_id(ADULT_BORN)
    response = await gw.share("POST", "/acme/v1/assess", json=applicant(**{field: adult}))
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "number",
    [
        permanent_resident_id(date(2015, 6, 1), province="99"),  # no province 99
        permanent_resident_id(date(2015, 6, 1), province="81"),  # Hong Kong issues none
        "94376020150231667X",  # 31 February
        "9437602015060166",  # too short
    ],
)
def test_a_number_not_laid_out_as_a_permanent_resident_number_gives_no_birth_date(
    minors_policy: Policy, number: str
) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    [subject] = subjects_of(route, applicant(id_number=number), {})
    assert subject.birth_date is None


async def test_a_childs_id_number_with_a_wrong_check_digit_is_denied(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([minors_contract()])
    doc = applicant(id_number=with_wrong_check_digit(resident_id(CHILD_BORN)))
    response = await gw.share("POST", "/acme/v1/assess", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")


def test_a_declared_birth_date_and_an_id_number_the_younger_counts(
    minors_policy: Policy,
) -> None:
    route = route_of(acme(minors_policy), "/v1/children")
    doc: dict[str, JSONValue] = {
        "child": {"user_id": resident_id(date(1990, 1, 1)), "birth_date": "2015-07-08"}
    }
    [subject] = subjects_of(route, doc, {})
    assert subject.birth_date == date(2015, 7, 8)
    # A declared adult birth date does not hide the child's ID number it contradicts.
    doc = {"child": {"user_id": resident_id(date(2015, 7, 8)), "birth_date": "1990-01-01"}}
    assert subjects_of(route, doc, {})[0].birth_date == date(2015, 7, 8)
    doc = {"child": {"user_id": "u-9", "birth_date": "2015-07-08T10:00:00+08:00"}}
    assert subjects_of(route, doc, {})[0].birth_date == date(2015, 7, 8)


def test_a_missing_birth_date_falls_back_to_the_id_number(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/children")
    doc: dict[str, JSONValue] = {
        "child": {"user_id": resident_id(date(2014, 3, 3)), "birth_date": None}
    }
    assert subjects_of(route, doc, {})[0].birth_date == date(2014, 3, 3)
    assert subjects_of(route, {"child": {"user_id": "u-1"}}, {})[0].birth_date is None


@pytest.mark.parametrize("value", ["07/08/2015", "2015-13-01", "soon", 20150708, True])
def test_a_birth_date_that_is_not_a_date_is_a_malformed_body(
    minors_policy: Policy, value: JSONValue
) -> None:
    route = route_of(acme(minors_policy), "/v1/children")
    with pytest.raises(MalformedBody, match=r"child\.birth_date is not an ISO 8601 date"):
        subjects_of(route, {"child": {"user_id": "u-1", "birth_date": value}}, {})


@pytest.mark.parametrize("user_id", [None, "", True, 1.5, ["u-1"], {"id": "u-1"}])
def test_a_missing_or_unusable_subject_is_a_malformed_body(
    minors_policy: Policy, user_id: JSONValue
) -> None:
    route = route_of(acme(minors_policy), "/v1/assess")
    doc: dict[str, JSONValue] = {"applicant": {"user_id": user_id}}
    with pytest.raises(MalformedBody, match=r"the subject field applicant\.user_id"):
        subjects_of(route, doc, {})


def test_batch_subjects_carry_their_record_index(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/batch")
    doc: dict[str, JSONValue] = {
        "applicants": [
            person("a", date(1990, 1, 1)),
            {"user_id": 42, "id_number": resident_id(date(2015, 2, 3))},
            person("c"),
        ]
    }
    assert subjects_of(route, doc, {}) == [
        Subject(0, "a", date(1990, 1, 1)),
        Subject(1, "42", date(2015, 2, 3)),
        Subject(2, "c", None),
    ]
    assert subjects_of(route, {"applicants": []}, {}) == []
    with pytest.raises(MalformedBody, match="record 1: the subject field"):
        subjects_of(route, {"applicants": [person("a"), {"name": "x"}]}, {})


def test_records_that_are_the_subject_ids_themselves(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/lookup")
    child = resident_id(date(2016, 4, 4))
    assert subjects_of(route, {"ids": ["u-1", child]}, {}) == [
        Subject(0, "u-1", None),
        Subject(1, child, date(2016, 4, 4)),
    ]


def test_subject_and_birth_date_from_the_query(minors_policy: Policy) -> None:
    route = route_of(acme(minors_policy), "/v1/people")
    assert subjects_of(route, {}, {"user_id": "u-7", "born": "2014-01-01"}) == [
        Subject(None, "u-7", date(2014, 1, 1))
    ]


# Terms.check with an explicit clock: the request date decides, in the gateway's zone.


def flow_for(
    policy: Policy, path: str, subjects: list[Subject], purpose: str = "credit_assessment"
) -> Flow:
    partner = acme(policy)
    flow = Flow(share_id="share-1", method="POST", policy=policy)
    flow.partner, flow.purpose, flow.route = partner, purpose, route_of(partner, path)
    flow.subjects, flow.records = subjects, len(subjects)
    return flow


def request_with(**headers: str) -> Any:
    return make_mocked_request("POST", "/acme/v1/assess", headers=headers)


async def test_a_subject_turning_14_at_local_midnight(minors_policy: Policy) -> None:
    terms = Terms()
    subjects = [Subject(None, "u-1", date(2011, 6, 15))]
    eve = datetime(2025, 6, 14, 23, 59, 59, tzinfo=SHANGHAI)  # 13 years 364 days
    with pytest.raises(MinorDenied) as refused:
        await terms.check(flow_for(minors_policy, "/v1/assess", subjects), request_with(), eve)
    assert refused.value.details == {}
    birthday = datetime(2025, 6, 15, 0, 0, tzinfo=SHANGHAI)  # 14 years exactly
    await terms.check(flow_for(minors_policy, "/v1/assess", subjects), request_with(), birthday)


async def test_a_minor_in_a_batch_is_named_by_index(minors_policy: Policy) -> None:
    subjects = [
        Subject(0, "a", date(1990, 1, 1)),
        Subject(1, "b", None),
        Subject(2, "c", date(2012, 2, 29)),
        Subject(3, "d", date(2013, 1, 1)),
    ]
    now = datetime(2026, 2, 28, 12, 0, tzinfo=SHANGHAI)
    with pytest.raises(MinorDenied, match="record 2 is under 14") as refused:
        await Terms().check(flow_for(minors_policy, "/v1/batch", subjects), request_with(), now)
    assert refused.value.details == {"record": 2}
    now = datetime(2027, 1, 1, 0, 0, tzinfo=SHANGHAI)
    await Terms().check(flow_for(minors_policy, "/v1/batch", subjects), request_with(), now)


@pytest.mark.parametrize("born", ["9999-12-31", "9986-01-01"])
async def test_a_birth_date_whose_fourteenth_year_no_date_holds_is_a_minors(
    make_gateway: GatewayFactory, born: str
) -> None:
    # Its fourteenth birthday is past the last date Python holds: this was a 500.
    gw = await make_gateway([minors_contract()])
    response = await gw.share("GET", f"/acme/v1/people?user_id=u-1&born={born}")
    await assert_refused(gw, response, 403, "minor_denied")


async def test_minor_with_id_number_is_denied(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([minors_contract()])
    doc = applicant(id_number=resident_id(CHILD_BORN))
    response = await gw.share("POST", "/acme/v1/assess", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")
    assert (await error_of(response))["message"] == (
        "the data subject is under 14; the contract denies shares about minors"
    )


@pytest.mark.parametrize(
    "separator",
    [
        "-",
        " ",
        "\uff0d",
        "\u2009",  # thin space
        "\u2003",  # em space
        "\u205f",  # medium mathematical space
        "\u1680",  # ogham space mark
        "\u3000",  # ideographic space
        "\u2028",  # line separator
        "\u0085",  # next line
        "\u2013",  # en dash
        "\u2212",  # minus sign
        "\u2043",  # hyphen bullet
        "\u30fc",  # katakana prolonged sound mark
        "\ufe63",  # small hyphen-minus
    ],
    ids=lambda c: f"U+{ord(c):04X}",
)
async def test_minor_with_an_id_number_written_in_groups_is_denied(
    make_gateway: GatewayFactory, separator: str
) -> None:
    gw = await make_gateway([minors_contract()])
    number = resident_id(CHILD_BORN)
    grouped = separator.join((number[:6], number[6:14], number[14:]))
    response = await gw.share("POST", "/acme/v1/assess", json=applicant(id_number=grouped))
    # The partner receives nothing, the child's number least of all.
    await assert_refused(gw, response, 403, "minor_denied")


@pytest.mark.parametrize("numerals", ["〇一二三四五六七八九", "零壹贰叁肆伍陆柒捌玖"])
async def test_minor_with_an_id_number_in_chinese_numerals_is_denied(
    make_gateway: GatewayFactory, numerals: str
) -> None:
    gw = await make_gateway([minors_contract()])
    written = resident_id(CHILD_BORN).translate(str.maketrans("0123456789", numerals))
    response = await gw.share("POST", "/acme/v1/assess", json=applicant(id_number=written))
    await assert_refused(gw, response, 403, "minor_denied")


@pytest.mark.parametrize(
    ("field", "written"),
    [
        ("id_number", "身份证 {}"),
        ("id_number", "{}（子女）"),
        ("id_number", "ID:{};"),
        ("id_number", "110105194912310021, {}"),  # an adult's number first
        ("user_id", "CN-{}"),
        ("user_id", "{} 张三"),
    ],
)
async def test_minor_with_an_id_number_among_other_text_is_denied(
    make_gateway: GatewayFactory, field: str, written: str
) -> None:
    gw = await make_gateway([minors_contract()])
    doc = applicant(**{field: written.format(resident_id(CHILD_BORN))})
    response = await gw.share("POST", "/acme/v1/assess", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")
    doc = applicant(**{field: written.format(resident_id(ADULT_BORN))})
    response = await gw.share("POST", "/acme/v1/assess", json=doc)
    assert response.status == 200, await response.text()


async def test_minor_by_subject_id_and_by_birth_date_field(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([minors_contract()])
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(user_id=resident_id(CHILD_BORN))
    )
    await assert_refused(gw, response, 403, "minor_denied")
    doc = {"child": {"user_id": "u-1", "name": "Xiao", "birth_date": CHILD_BORN.isoformat()}}
    response = await gw.share("POST", "/acme/v1/children", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")


async def test_adult_and_unknown_age_are_shared(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([minors_contract()])
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(id_number=resident_id(ADULT_BORN))
    )
    assert response.status == 200, await response.text()
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    # A first-generation (15-digit) number: born in the 1900s, never a child.
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(id_number="110105 850304 123")
    )
    assert response.status == 200, await response.text()
    # A birth date field sent as null tells no age either.
    doc = {"child": {"user_id": "u-1", "name": "Xiao", "birth_date": None}}
    response = await gw.share("POST", "/acme/v1/children", json=doc)
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 4
    assert [r.decision for r in gw.log.records] == ["shared"] * 4


async def test_one_minor_denies_the_whole_batch(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([minors_contract()])
    doc = {
        "applicants": [
            person("a", ADULT_BORN),
            {"user_id": "b", "name": "Xiao", "id_number": resident_id(CHILD_BORN)},
            person("c", ADULT_BORN),
        ]
    }
    response = await gw.share("POST", "/acme/v1/batch", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")
    error = await error_of(response)
    assert error["message"] == "record 1 is under 14; the contract denies shares about minors"
    assert error["details"] == {"record": 1}
    assert last_record(gw.log.records).records == 0


async def test_minors_allowed_are_shared_without_consent_when_none_is_required(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(routes=ROUTES)])  # minors: allow, no consent required
    doc = applicant(id_number=resident_id(CHILD_BORN))
    response = await gw.share("POST", "/acme/v1/assess", json=doc)
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ()


# --- consent ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def consent_key() -> SigningKey:
    return rsa_key(kid="consent-1")


@pytest.fixture
def consent_settings(tmp_path: Path, consent_key: SigningKey) -> dict[str, Any]:
    pem = consent_key.write_pem(tmp_path / "consent.pem")
    return {"consent": {"algorithms": ["RS256"], "public_key_file": pem}}


def consent_token(
    key: SigningKey,
    subject: str = "u-1",
    partner: str = "acme",
    purposes: list[str] | None = None,
    **claims: Any,
) -> str:
    return mint(
        key,
        issuer=None,
        audience=None,
        subject=subject,
        partner=partner,
        purposes=["credit_assessment"] if purposes is None else purposes,
        jti=claims.pop("jti", "ct-1"),
        **claims,
    )


def registry_of(gw: Any) -> ConsentRegistry:
    registry = gw.runtime.terms.registry
    assert isinstance(registry, ConsentRegistry)
    return registry


async def test_consent_is_judged_when_the_body_is_in(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([third_party_contract()])
    registry = registry_of(gw)
    registry.grant(
        "u-1", "acme", "credit_assessment", datetime.now(UTC) - timedelta(hours=1), "C-1"
    )
    raw = orjson.dumps(applicant())

    async def slow_body() -> AsyncIterator[bytes]:
        yield raw[:10]
        await asyncio.sleep(0.05)
        # Withdrawn while the body is still arriving: the share must not go out on it.
        registry.withdraw("u-1", "acme", "credit_assessment", datetime.now(UTC), "W-1")
        await asyncio.sleep(0.01)
        yield raw[10:]

    response = await gw.client.post(
        "/acme/v1/assess",
        data=slow_body(),
        headers={
            "Authorization": f"Bearer {gw.token()}",
            "X-Share-Purpose": "credit_assessment",
            "Content-Type": "application/json",
        },
    )
    await assert_refused(gw, response, 403, "consent_required")


async def test_a_registry_replaced_under_the_gateway_refuses_the_shares_needing_it(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway([third_party_contract()])
    registry = registry_of(gw)
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry.grant("u-1", "acme", "credit_assessment", granted, "C-1")
    assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 200
    # A copy restored with `mv`, which holds no grant: the gateway's connections still read
    # the old file, which does.
    restored = tmp_path / "restored.sqlite"
    ConsentRegistry(restored, gw.runtime.subject_key).close()
    restored.replace(registry.path)

    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 503
    assert (await error_of(response))["code"] == "registry_unavailable"
    assert len(gw.partner.received) == 1
    refused = last_record(gw.log.records)
    assert (refused.decision, refused.reason) == ("denied", "registry_unavailable")
    admin = {"Authorization": f"Bearer {gw.token('gateway:admin')}"}
    looked_up = await gw.client.get("/_gateway/consent?subject=u-1", headers=admin)
    assert looked_up.status == 503
    assert (await error_of(looked_up))["code"] == "registry_unavailable"


async def test_a_reload_opens_the_registry_file_put_in_place_of_the_replaced_one(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway([third_party_contract()])
    registry = registry_of(gw)
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry.grant("u-1", "acme", "credit_assessment", granted, "C-1")
    restored = tmp_path / "restored.sqlite"
    with ConsentRegistry(restored, gw.runtime.subject_key) as copy:
        copy.grant("u-1", "acme", "credit_assessment", granted, "C-2")
    registry.path.unlink()
    admin = {"Authorization": f"Bearer {gw.token('gateway:admin')}"}
    # Removed: nothing to open, and an empty registry is not made up in its place.
    assert (await gw.client.post("/_gateway/reload", headers=admin)).status == 200
    assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 503
    assert not registry.path.exists()
    restored.rename(registry.path)
    assert (await gw.client.get("/_gateway/ready")).status == 503

    reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert reloaded.status == 200
    assert (await gw.client.get("/_gateway/ready")).status == 200
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 1
    assert last_record(gw.log.records).consent_basis == ("registry:C-2",)
    looked_up = await gw.client.get("/_gateway/consent?subject=u-1", headers=admin)
    assert [g["reference"] for g in (await looked_up.json())["grants"]] == ["C-2"]


async def test_consent_granted_withdrawn_and_granted_again(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([third_party_contract()])
    registry = registry_of(gw)
    start = datetime.now(UTC)
    registry.grant("u-1", "acme", "credit_assessment", start - timedelta(hours=3), "C-1")

    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 1
    shared = last_record(gw.log.records)
    assert (shared.decision, shared.consent_basis) == ("shared", ("registry:C-1",))

    registry.withdraw("u-1", "acme", "credit_assessment", start - timedelta(hours=2), "C-1")
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 403
    error = await error_of(response)
    assert error["code"] == "consent_required"
    assert error["message"] == (
        "the data subject has not consented to sharing with acme for credit_assessment"
    )
    assert len(gw.partner.received) == 1
    denied = last_record(gw.log.records)
    assert (denied.decision, denied.reason, denied.consent_basis) == (
        "denied",
        "consent_required",
        (),
    )

    registry.grant("u-1", "acme", "credit_assessment", start - timedelta(hours=1), "C-2")
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 2
    assert last_record(gw.log.records).consent_basis == ("registry:C-2",)


async def test_a_grant_for_another_subject_partner_or_purpose_is_no_consent(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([third_party_contract()])
    registry = registry_of(gw)
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry.grant("u-2", "acme", "credit_assessment", granted, "C-1")
    registry.grant("u-1", "other-partner", "credit_assessment", granted, "C-2")
    registry.grant("u-1", "acme", "service_delivery", granted, "C-3")
    registry.grant("u-1", "acme", "credit_assessment", datetime.now(UTC) + timedelta(hours=1), "F")
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    await assert_refused(gw, response, 403, "consent_required")


async def test_a_third_party_needs_consent_for_every_share(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([third_party_contract()])
    # No sensitive category in this share, and still a third party needs the subject's consent.
    response = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-1"}})
    await assert_refused(gw, response, 403, "consent_required")


async def test_a_valid_consent_token_is_consent(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any], consent_key: SigningKey
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    token = consent_token(consent_key, jti="ct-77")
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert "X-Consent-Token" not in seen.headers
    assert last_record(gw.log.records).consent_basis == ("token:ct-77",)


async def test_a_consent_token_issued_before_a_withdrawal_is_no_longer_consent(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any], consent_key: SigningKey
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    registry = registry_of(gw)
    now = time.time()
    issued_earlier = consent_token(consent_key, jti="ct-old", now=now - 120, ttl_s=3600)

    async def share(token: str) -> Any:
        return await gw.share(
            "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
        )

    response = await share(issued_earlier)
    assert response.status == 200, await response.text()
    # Withdrawn for another partner or purpose: the token still speaks for the subject.
    withdrawn = datetime.fromtimestamp(now - 90, UTC)
    registry.withdraw("u-1", "other", "credit_assessment", withdrawn, "W-0")
    registry.withdraw("u-1", "acme", "service_delivery", withdrawn, "W-0")
    response = await share(issued_earlier)
    assert response.status == 200, await response.text()

    registry.withdraw("u-1", "acme", "credit_assessment", withdrawn, "W-1")
    response = await share(issued_earlier)
    await assert_refused_after(gw, response, shared_before=2)
    assert "predates a withdrawal" in (await error_of(response))["message"]
    without_iat = consent_token(consent_key, jti="ct-no-iat", omit=["iat"])
    await assert_refused_after(gw, await share(without_iat), shared_before=2)
    before_any_date = consent_token(consent_key, jti="ct-ancient", iat=-1e300)
    await assert_refused_after(gw, await share(before_any_date), shared_before=2)
    # A date, but one the leeway takes past the first there is: as if it had none (was a 500).
    first_of_dates = consent_token(consent_key, jti="ct-year-1", iat=-62135596800)
    await assert_refused_after(gw, await share(first_of_dates), shared_before=2)
    # Consent given again after the withdrawal, in a token issued since: consent again.
    response = await share(consent_token(consent_key, jti="ct-new", now=now))
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ("token:ct-new",)


@pytest.mark.parametrize(
    ("issued_after_withdrawal_s", "consent"),
    [
        (-30, False),
        (20, False),  # within the leeway of it: the issuer's clock may run ahead of ours
        (LEEWAY_S := 30, False),  # the leeway's bound itself still counts as before it
        (31, True),  # an `iat` ahead of our clock (within the leeway), well after it
    ],
)
async def test_a_consent_token_dated_within_the_leeway_of_a_withdrawal_is_no_consent(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    consent_key: SigningKey,
    issued_after_withdrawal_s: float,
    consent: bool,
) -> None:
    settings = {"consent": {**consent_settings["consent"], "leeway_s": LEEWAY_S}}
    gw = await make_gateway([third_party_contract()], settings=settings)
    # Whole seconds, as `iat` is: at the leeway's bound the token's date is the withdrawal's.
    now = int(time.time())
    withdrawn_at = now - 2  # just withdrawn: the tokens' `iat` reach past now
    registry_of(gw).withdraw(
        "u-1", "acme", "credit_assessment", datetime.fromtimestamp(withdrawn_at, UTC), "W-1"
    )
    token = consent_token(
        consent_key, jti="ct-1", now=withdrawn_at + issued_after_withdrawal_s, ttl_s=3600
    )
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    if consent:
        assert response.status == 200, await response.text()
    else:
        await assert_refused_after(gw, response, shared_before=0)


async def test_a_withdrawal_dated_later_than_now_does_not_yet_stop_a_token(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any], consent_key: SigningKey
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    later = datetime.now(UTC) + timedelta(hours=1)
    registry_of(gw).withdraw("u-1", "acme", "credit_assessment", later, "W-1")
    token = consent_token(consent_key, jti="ct-1")
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    assert response.status == 200, await response.text()


async def assert_refused_after(gw: Any, response: Any, *, shared_before: int) -> None:
    error = await error_of(response)
    assert (response.status, error["code"]) == (403, "consent_required")
    assert len(gw.partner.received) == shared_before
    denied = last_record(gw.log.records)
    assert (denied.decision, denied.reason, denied.consent_basis) == (
        "denied",
        "consent_required",
        (),
    )


async def test_a_reload_withdraws_a_consent_key_taken_out_of_its_file_and_keeps_a_good_one(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    consent_key: SigningKey,
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    admin = {"Authorization": f"Bearer {gw.token('gateway:admin')}"}
    pem = consent_settings["consent"]["public_key_file"]
    consents = gw.runtime.terms.consent_tokens
    assert consents is not None

    async def share(token: str) -> ClientResponse:
        return await gw.share(
            "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
        )

    signed_by_old = consent_token(consent_key, jti="ct-old")
    response = await share(signed_by_old)
    assert response.status == 200, await response.text()
    assert consents.cached_tokens == 1

    rotated = rsa_key(kid="consent-2")
    rotated.write_pem(pem)
    reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert reloaded.status == 200, await reloaded.text()
    response = await share(signed_by_old)
    await assert_refused_after(gw, response, shared_before=1)
    assert "signature is invalid" in (await error_of(response))["message"]
    signed_by_new = consent_token(rotated, jti="ct-new")
    response = await share(signed_by_new)
    assert response.status == 200, await response.text()

    pem.write_bytes(b"not a key")
    refused = await gw.client.post("/_gateway/reload", headers=admin)
    assert refused.status == 422
    [problem] = (await refused.json())["error"]["problems"]
    assert problem.startswith(f"consent.public_key_file: {pem} is not a PEM public key")
    for token in (signed_by_new, consent_token(rotated, jti="ct-fresh")):
        response = await share(token)
        assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 4


@pytest.mark.parametrize(
    "claims",
    [
        {"subject": "u-2"},
        {"partner": "other-partner"},
        {"purposes": ["service_delivery"]},
        {"purposes": []},
        {"purposes": "credit_assessment"},
        {"partner": ["acme"]},
        {"jti": None},
        {"jti": ""},
        {"subject": "U-1"},
        {"partner": "acme-2"},
    ],
    ids=[
        "other-subject",
        "other-partner",
        "other-purpose",
        "no-purpose",
        "purposes-not-a-list",
        "partner-a-list",
        "no-jti",
        "empty-jti",
        "subject-in-another-case",  # a letter's case is part of an id
        "partner-named-by-prefix",
    ],
)
async def test_a_consent_token_that_does_not_cover_the_share_is_refused(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    consent_key: SigningKey,
    claims: dict[str, Any],
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    token = consent_token(consent_key, **claims)
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    await assert_refused(gw, response, 403, "consent_required")


def bad_consent_token(problem: str, key: SigningKey, caller_key: SigningKey) -> str:
    match problem:
        case "expired":
            return consent_token(key, ttl_s=-3600)
        case "other-key":
            return consent_token(rsa_key(kid=key.kid))
        case "unsigned":
            return consent_token(key).rsplit(".", 1)[0] + "."
        case "not-yet-valid":
            return consent_token(key, nbf=time.time() + 3600)
        case "caller-key":  # the identity provider's: a caller's key is no consent service's
            return consent_token(caller_key)
    return "not-a-token"


@pytest.mark.parametrize(
    "problem", ["expired", "other-key", "unsigned", "garbage", "not-yet-valid", "caller-key"]
)
async def test_an_invalid_consent_token_is_403_not_401(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    consent_key: SigningKey,
    idp_key: SigningKey,
    problem: str,
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    token = bad_consent_token(problem, consent_key, idp_key)
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    await assert_refused(gw, response, 403, "consent_required")
    assert "WWW-Authenticate" not in response.headers
    assert "the consent token was not accepted" in (await error_of(response))["message"]


async def test_a_consent_token_without_consent_keys_is_not_accepted(
    make_gateway: GatewayFactory, consent_key: SigningKey
) -> None:
    gw = await make_gateway([third_party_contract()])  # no `consent:` settings
    response = await gw.share(
        "POST",
        "/acme/v1/assess",
        json=applicant(),
        headers={"X-Consent-Token": consent_token(consent_key)},
    )
    await assert_refused(gw, response, 403, "consent_required")
    assert "no consent keys" in (await error_of(response))["message"]


async def test_a_registry_grant_still_counts_beside_a_rejected_token(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any], consent_key: SigningKey
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    registry_of(gw).grant(
        "u-1", "acme", "credit_assessment", datetime.now(UTC) - timedelta(hours=1), "C-1"
    )
    response = await gw.share(
        "POST",
        "/acme/v1/assess",
        json=applicant(),
        headers={"X-Consent-Token": consent_token(consent_key, ttl_s=-3600)},
    )
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ("registry:C-1",)


async def test_every_subject_of_a_batch_needs_consent(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any], consent_key: SigningKey
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry_of(gw).grant("a", "acme", "credit_assessment", granted, "C-a")
    doc = {"applicants": [person("a"), person("b"), person("c")]}
    token = consent_token(consent_key, subject="c", jti="ct-c")

    response = await gw.share(
        "POST", "/acme/v1/batch", json=doc, headers={"X-Consent-Token": token}
    )
    await assert_refused(gw, response, 403, "consent_required")
    error = await error_of(response)
    assert error["message"] == (
        "record 1 has not consented to sharing with acme for credit_assessment"
    )
    assert error["details"] == {"record": 1}

    registry_of(gw).grant("b", "acme", "credit_assessment", granted, "C-b")
    response = await gw.share(
        "POST", "/acme/v1/batch", json=doc, headers={"X-Consent-Token": token}
    )
    assert response.status == 200, await response.text()
    record = last_record(gw.log.records)
    assert record.consent_basis == ("registry:C-a", "registry:C-b", "token:ct-c")
    assert record.records == 3


async def test_sensitive_categories_need_consent_where_the_contract_says_so(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"sensitive": SENSITIVE_CONSENT}, routes=SUBJECT_ROUTES)]
    )
    # identity.id_number is sensitive: its share needs consent, a share without it does not.
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(id_number=resident_id(ADULT_BORN))
    )
    await assert_refused(gw, response, 403, "consent_required")
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ()


async def test_data_about_a_minor_needs_consent_where_minors_are_allowed(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"sensitive": SENSITIVE_CONSENT, "minors": "allow"}, routes=SUBJECT_ROUTES)]
    )
    doc = {"applicants": [person("adult", ADULT_BORN), person("child", CHILD_BORN)]}
    response = await gw.share("POST", "/acme/v1/batch", json=doc)
    await assert_refused(gw, response, 403, "consent_required")
    assert (await error_of(response))["details"] == {"record": 1}

    # Only the child's record is sensitive for its age: the adult's needs no consent here.
    registry_of(gw).grant(
        "child", "acme", "credit_assessment", datetime.now(UTC) - timedelta(hours=1), "P-1"
    )
    response = await gw.share("POST", "/acme/v1/batch", json=doc)
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ("registry:P-1",)


async def test_consent_is_judged_before_minors_as_the_spec_orders(
    make_gateway: GatewayFactory,
) -> None:
    # A third party that denies minors, and a child with no consent on file: both checks fail,
    # and SPEC 4 lists consent first.
    gw = await make_gateway([third_party_contract(minors="deny")])
    doc = {"applicants": [person("child", CHILD_BORN)]}
    response = await gw.share("POST", "/acme/v1/batch", json=doc)
    await assert_refused(gw, response, 403, "consent_required")
    registry_of(gw).grant(
        "child", "acme", "credit_assessment", datetime.now(UTC) - timedelta(hours=1), "P-1"
    )
    response = await gw.share("POST", "/acme/v1/batch", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")


# --- rate ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


TICKETS = (f"share-{n}" for n in itertools.count())


async def test_the_rate_holds_in_every_window_even_after_an_idle_spell() -> None:
    clock = FakeClock()
    windows = SlidingWindows(clock=clock)
    assert await windows.acquire("acme", 2, next(TICKETS)) is None
    assert await windows.acquire("acme", 2, next(TICKETS)) is None
    assert await windows.acquire("acme", 2, next(TICKETS)) == pytest.approx(1.0)
    assert await windows.acquire("other", 2, next(TICKETS)) is None  # one window per partner
    clock.now += 0.5
    assert await windows.acquire("acme", 2, next(TICKETS)) == pytest.approx(0.5)
    clock.now += 0.5
    assert await windows.acquire("acme", 2, next(TICKETS)) is None
    clock.now += 3600  # however long the pause, a second still holds two
    admitted = []
    for _ in range(10):
        admitted.append(await windows.acquire("acme", 2, next(TICKETS)) is None)
        clock.now += 0.1
    assert admitted == [True, True] + [False] * 8


async def test_a_rate_below_one_per_second_and_a_fractional_rate() -> None:
    clock = FakeClock()
    windows = SlidingWindows(clock=clock)
    assert await windows.acquire("acme", 0.5, next(TICKETS)) is None
    assert await windows.acquire("acme", 0.5, next(TICKETS)) == pytest.approx(2.0)
    clock.now += 1.5
    assert await windows.acquire("acme", 0.5, next(TICKETS)) == pytest.approx(0.5)
    clock.now += 0.5
    assert await windows.acquire("acme", 0.5, next(TICKETS)) is None
    # 2.5 per second never lets three through in one second.
    admitted = [await windows.acquire("b", 2.5, next(TICKETS)) is None for _ in range(3)]
    assert admitted == [True, True, False]
    # Rounded down, not to the nearest: 2.6 a second is still two in any one second.
    admitted = [await windows.acquire("c", 2.6, next(TICKETS)) is None for _ in range(3)]
    assert admitted == [True, True, False]


async def test_a_released_admission_frees_its_own_place() -> None:
    clock = FakeClock()
    windows = SlidingWindows(clock=clock)
    assert await windows.acquire("acme", 1, "first") is None
    await windows.release("acme", "first")
    assert await windows.acquire("acme", 1, "second") is None
    # Released after a later share was admitted: the place that frees is its own, the older
    # one, not the later share's, which still counts for its whole second.
    clock.now += 0.6
    assert await windows.acquire("acme", 2, "third") is None
    await windows.release("acme", "second")
    clock.now += 0.5  # "second"'s place would have left the window by now, "third"'s has not
    assert await windows.acquire("acme", 2, "fourth") is None
    assert await windows.acquire("acme", 2, "fifth") is not None
    await windows.release("acme", "unknown")  # nothing of it: nothing changes
    assert await windows.acquire("acme", 2, "sixth") is not None


async def test_a_rate_a_reload_lowers_counts_a_share_sent_before_it(tmp_path: Path) -> None:
    # At 10 a second, a share sent more than a second ago has left the window, and the next
    # share pushes it out. Lowered to one per 2 s, and that next share given back (its record
    # failed, or its connection did before a byte was sent), the first still counts: the
    # partner would have had two shares within 2 s.
    clock = FakeClock()
    before = compile_contracts(tmp_path / "before", contract(terms={"rate_limit_per_s": 10}))
    after = compile_contracts(tmp_path / "after", contract(terms={"rate_limit_per_s": 0.5}))
    terms = Terms(limiter=SlidingWindows(clock=clock))
    now = datetime(2025, 6, 1, 12, 0, tzinfo=SHANGHAI)
    subjects = [Subject(None, "u-1", None)]

    async def decided(policy: Policy, share_id: str) -> Flow:
        flow = flow_for(policy, "/v1/assess", subjects)
        flow.share_id = share_id
        await terms.check(flow, request_with(), now)
        return flow

    await decided(before, "sent")
    clock.now += 1.25
    given_back = await decided(before, "given-back")
    await terms.give_back(given_back.volume_taken)
    # The reload.
    clock.now += 0.25
    with pytest.raises(RateLimited) as refused:
        await decided(after, "too-early")
    assert refused.value.headers == {"Retry-After": "1"}  # 0.5 s: 2 s after "sent"
    clock.now += 0.5
    await decided(after, "in-its-turn")


async def test_a_share_sent_after_a_reload_lowers_the_rate_waits_out_the_one_before() -> None:
    # The same at the moment each share is written to the partner.
    clock = FakeClock()
    turns = TurnsWatched(clock=clock)
    turns.waiting = asyncio.Event()
    terms = Terms(sends=turns)
    day = date(2025, 6, 1)
    assert await terms.take_turn("acme", 10, "sent") is False
    clock.now += 1.25
    assert await terms.take_turn("acme", 10, "given-back") is False
    await terms.give_back(VolumeTaken("acme", day, 1, "given-back"))  # no byte went out
    clock.now += 0.25  # the reload: one share per 2 s
    later = asyncio.ensure_future(terms.take_turn("acme", 0.5, "too-early"))
    waiting = asyncio.ensure_future(turns.waiting.wait())
    done, _ = await asyncio.wait({later, waiting}, return_when=asyncio.FIRST_COMPLETED)
    later.cancel()
    waiting.cancel()
    assert waiting in done  # told to wait: the share sent 1.5 s ago still counts
    assert later not in done


@hypothesis_settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=12),  # eighths of a second since the last step
            st.sampled_from(["send", "send", "give_back", "reload"]),
            st.sampled_from([0.25, 0.5, 2, 4]),  # the rate a reload brings in
            st.integers(min_value=0, max_value=3),  # which of the latest shares is given back
        ),
        max_size=30,
    ),
    st.sampled_from([0.25, 0.5, 2, 4]),
)
# Sent, pushed out of a one-second window by the next share, which is then given back: a
# rate a reload lowers to one per 2 s still counts the first.
@example(
    [
        (0, "send", 2, 0),
        (10, "send", 2, 0),
        (0, "give_back", 2, 0),
        (0, "reload", 0.5, 0),
        (2, "send", 2, 0),
    ],
    2,
)
def test_no_window_of_the_rate_in_force_holds_more_than_it_allows(
    steps: list[tuple[int, str, float, int]], first_rate: float
) -> None:
    """Whatever the reloads and give-backs, a share admitted under a rate finds fewer than the
    rate allows already sent in the window before it: the partner never has more in any window
    of the rate than the rate allows, counting the shares sent before a reload."""
    clock = FakeClock()
    windows = SlidingWindows(clock=clock)
    rate = first_rate
    sent: list[tuple[float, str]] = []  # what the partner received: (when, ticket)
    tickets = itertools.count()

    async def run() -> None:
        nonlocal rate
        for eighths, action, new_rate, which in steps:
            clock.now += eighths / 8  # exact in binary: no rounding at a window's edge
            if action == "reload":
                rate = new_rate
            elif action == "give_back" and sent:
                _, ticket = sent.pop(-1 - which % len(sent))
                await windows.release("acme", ticket)
            elif action == "send":
                ticket = f"share-{next(tickets)}"
                if await windows.acquire("acme", rate, ticket) is None:
                    sent.append((clock.now, ticket))
                    span, allowed = rate_window(rate)
                    within = [when for when, _ in sent if when > clock.now - span]
                    assert len(within) <= allowed, (rate, sent)

    asyncio.run(run())


async def reload_as(gw: Any, doc: dict[str, Any]) -> None:
    """Reload the gateway with `doc` as acme's contract, still calling the same fake partner."""
    doc["upstream"]["base_url"] = gw.partner.base_url
    (gw.runtime.settings.contracts_dir / "acme.yaml").write_text(yaml.safe_dump(doc))
    await gw.runtime.reload()


async def test_a_rate_a_reload_brings_in_covers_the_shares_made_before(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(routes=ROUTES)])  # no rate yet
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # every request "at once"
    for _ in range(2):
        assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 200
    await reload_as(gw, contract(terms={"rate_limit_per_s": 2}, routes=ROUTES))
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 429  # two already in this second
    assert len(gw.partner.received) == 2


async def test_shares_without_a_rate_are_remembered_a_bounded_few() -> None:
    clock = FakeClock()
    windows = SlidingWindows(clock=clock)
    assert await windows.acquire("acme", 5000, "rated") is None
    for n in range(5000):  # the rate was taken away by a reload: the window stops growing
        windows.note("acme", f"unrated-{n}")
    # A rate brought back judges on the latest shares kept: they fill a rate of 1000 a second.
    assert await windows.acquire("acme", 1000, "again") is not None
    await windows.release("acme", "unrated-4999")  # a share not sent gives its place back
    assert await windows.acquire("acme", 1000, "again") is None
    assert await windows.acquire("acme", 1001, "more") is None


async def test_rate_limit_answers_429_with_retry_after(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(terms={"rate_limit_per_s": 1})])
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # the two requests are "at once"
    first = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert first.status == 200, await first.text()
    second = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert second.status == 429
    assert second.headers["Retry-After"] == "1"
    assert (await error_of(second))["code"] == "rate_limited"
    assert len(gw.partner.received) == 1
    record = last_record(gw.log.records)
    assert (record.decision, record.reason) == ("denied", "rate_limited")


class TurnsWatched(SlidingWindows):
    """Sets `waiting` whenever a share is told to wait for its turn."""

    waiting: asyncio.Event

    async def acquire(self, key: str, rate_per_s: float, ticket: str) -> float | None:
        wait = await SlidingWindows.acquire(self, key, rate_per_s, ticket)
        if wait is not None:
            self.waiting.set()
        return wait


async def test_a_share_sent_later_than_decided_waits_for_its_turn(
    make_gateway: GatewayFactory,
) -> None:
    # Decided a second apart, sent within one second: as when the first waited on the way
    # (for a free connection to a partner that stalled, a handshake). The partner would have
    # had two shares in one second at a rate of one.
    gw = await make_gateway([contract(terms={"rate_limit_per_s": 1})])
    decided, sent = FakeClock(), FakeClock()
    gw.runtime.terms.limiter = SlidingWindows(clock=decided)
    turns = TurnsWatched(clock=sent)
    turns.waiting = asyncio.Event()
    gw.runtime.terms.sends = turns
    first = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert first.status == 200, await first.text()
    decided.now += 1.0
    second = asyncio.ensure_future(gw.share("POST", "/acme/v1/assess", json=applicant()))
    waiting = asyncio.ensure_future(turns.waiting.wait())
    done, _ = await asyncio.wait({second, waiting}, return_when=asyncio.FIRST_COMPLETED)
    assert waiting in done
    assert len(gw.partner.received) == 1
    sent.now += 1.0  # its turn comes
    response = await second
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 2


async def test_retry_after_rounds_up_to_whole_seconds(tmp_path: Path) -> None:
    policy = compile_contracts(tmp_path / "c", contract(terms={"rate_limit_per_s": 0.4}))
    terms = Terms(limiter=SlidingWindows(clock=FakeClock()))
    now = datetime(2025, 6, 1, 12, 0, tzinfo=SHANGHAI)
    subjects = [Subject(None, "u-1", None)]
    await terms.check(flow_for(policy, "/v1/assess", subjects), request_with(), now)
    with pytest.raises(RateLimited) as refused:
        await terms.check(flow_for(policy, "/v1/assess", subjects), request_with(), now)
    assert refused.value.headers == {"Retry-After": "3"}  # 2.5 s


# --- daily volume ----------------------------------------------------------------------------


async def test_a_share_whose_record_failed_counts_against_no_cap(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(terms={"max_records_per_day": 2, "rate_limit_per_s": 2})])
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # every request "at once"
    gw.log.available = False
    for _ in range(2):  # refused 503: nothing recorded, nothing sent
        assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 503
    gw.log.available = True
    for _ in range(2):  # the day's two records and the second's two shares are all still there
        response = await gw.share("POST", "/acme/v1/assess", json=applicant())
        assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 2


async def test_a_cap_a_reload_brings_in_covers_the_records_shared_before(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(routes=ROUTES)])  # no daily cap yet
    for _ in range(3):
        assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 200
    await reload_as(gw, contract(terms={"max_records_per_day": 3}, routes=ROUTES))
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 429
    assert (await error_of(response))["code"] == "quota_exceeded"
    assert len(gw.partner.received) == 3


async def test_a_cap_a_reload_lowers_below_the_days_count_still_lets_shares_of_no_records_go(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(terms={"max_records_per_day": 3}, routes=ROUTES)])
    for _ in range(3):
        assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 200
    await reload_as(gw, contract(terms={"max_records_per_day": 2}, routes=ROUTES))
    # The day's three records stay counted: one more is over the lowered cap.
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 429
    assert (await error_of(response))["code"] == "quota_exceeded"
    assert len(gw.partner.received) == 3
    # A note about no one adds nothing to the count, so it is no more over the cap than before.
    response = await gw.share(
        "POST", "/acme/v1/notes", json={"note": "n"}, purpose="service_delivery"
    )
    assert response.status == 200, await response.text()
    assert gw.partner.received[-1].json() == {"note": "n"}
    record = last_record(gw.log.records)
    assert (record.decision, record.records) == ("shared", 0)


GUARANTOR_ROUTE: dict[str, Any] = {
    **BATCH_ROUTE,
    "path": "/v1/guaranteed",
    "fields": [
        *BATCH_ROUTE["fields"],
        {"path": "guarantor.name", "category": "identity.name"},
        {"path": "note", "category": "business.note"},
    ],
}


async def test_personal_data_about_no_named_subject_counts_one_record(
    make_gateway: GatewayFactory,
) -> None:
    # An empty batch with a guarantor's name: no record of `applicants[]`, still a person's data.
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 1}, routes=[*ROUTES, GUARANTOR_ROUTE])]
    )
    share = {"applicants": [], "guarantor": {"name": "Zhao"}}
    assert (await gw.share("POST", "/acme/v1/guaranteed", json=share)).status == 200
    record = last_record(gw.log.records)
    assert (record.decision, record.records, record.subject_refs) == ("shared", 1, ())
    response = await gw.share("POST", "/acme/v1/guaranteed", json=share)
    assert response.status == 429
    assert (await error_of(response))["code"] == "quota_exceeded"
    assert [seen.json()["guarantor"] for seen in gw.partner.received] == [{"name": "Zhao"}]


GUARANTOR_ID_ROUTE: dict[str, Any] = {
    **BATCH_ROUTE,
    "path": "/v1/guaranteed-ids",
    "fields": [
        *BATCH_ROUTE["fields"],
        {"path": "guarantor.id_number", "category": "identity.id_number"},
        {"path": "documents.**", "category": "identity.id_number"},
    ],
}
SUBTREE_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/documents-of",
    "purpose": "credit_assessment",
    "subject": "applicant.user_id",
    "fields": [{"path": "applicant.docs.**", "category": "identity.id_number"}],
}


def _guarantor(child: str) -> dict[str, Any]:
    return {"applicants": [person("a", ADULT_BORN)], "guarantor": {"id_number": child}}


def _guarantor_of_no_record(child: str) -> dict[str, Any]:
    return {"applicants": [], "guarantor": {"id_number": child}}


def _subtree_outside_records(child: str) -> dict[str, Any]:
    return {"applicants": [], "documents": [{"card": child}]}


def _subtree(child: str) -> dict[str, Any]:
    return {"applicant": {"user_id": "u-1", "docs": {"id": child}}}


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("guaranteed-ids", _guarantor),
        ("guaranteed-ids", _guarantor_of_no_record),
        ("guaranteed-ids", _subtree_outside_records),
        ("documents-of", _subtree),
    ],
    ids=["guarantor", "guarantor_of_no_record", "subtree_outside_records", "subtree"],
)
async def test_a_childs_id_number_anywhere_the_route_sends_one_counts(
    make_gateway: GatewayFactory, target: str, body: Callable[[str], dict[str, Any]]
) -> None:
    # Outside the records (a guarantor's), or anywhere inside a subtree: still a child's.
    doc = body(resident_id(CHILD_BORN))
    routes = [*ROUTES, GUARANTOR_ID_ROUTE, SUBTREE_ROUTE]
    gw = await make_gateway([contract(terms={"minors": "deny"}, routes=routes)])
    response = await gw.share("POST", f"/acme/v1/{target}", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")
    # Where a child's data needs consent, a route sending ID numbers outside its records does
    # not load: no record's consent covers them (tests/test_contractset.py).


NESTED_BATCH_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/nested",
    "purpose": "credit_assessment",
    "records": "batch.applicants[]",
    "subject": "batch.applicants[].user_id",
    "fields": [{"path": "batch.**", "category": "identity.id_number"}],
}


async def test_an_id_number_in_a_record_subtree_goes_on_that_records_consent(
    make_gateway: GatewayFactory,
) -> None:
    # Where ID numbers need consent, the subtree is each record's (`batch.**` over the records
    # does not load): a child's ID number inside record 0 goes on record 0's consent, and one
    # beside the records is not sent at all.
    route = {
        **NESTED_BATCH_ROUTE,
        "fields": [{"path": "batch.applicants[].**", "category": "identity.id_number"}],
    }
    gw = await make_gateway(
        [contract(terms={"sensitive": SENSITIVE_CONSENT, "minors": "allow"}, routes=[route])]
    )
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry_of(gw).grant("c", "acme", "credit_assessment", granted, "G")
    child = resident_id(CHILD_BORN)
    inside = {"batch": {"applicants": [{"user_id": "c", "id_number": child}]}}
    response = await gw.share("POST", "/acme/v1/nested", json=inside)
    assert response.status == 200, await response.text()
    beside = {"batch": {"applicants": [{"user_id": "c"}], "guarantor": child}}
    response = await gw.share("POST", "/acme/v1/nested", json=beside)
    assert response.status == 200, await response.text()
    assert [seen.json() for seen in gw.partner.received] == [
        inside,
        {"batch": {"applicants": [{"user_id": "c"}]}},
    ]


async def test_a_childs_id_number_in_a_record_under_a_subtree_is_denied(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"minors": "deny"}, routes=[*ROUTES, NESTED_BATCH_ROUTE])]
    )
    child = resident_id(CHILD_BORN)
    inside = {"batch": {"applicants": [{"user_id": "c", "id_number": child}]}}
    response = await gw.share("POST", "/acme/v1/nested", json=inside)
    await assert_refused(gw, response, 403, "minor_denied")
    assert (await error_of(response))["details"] == {"record": 0}


@pytest.mark.parametrize("body", [{"applicants": []}, {}])
async def test_a_childs_query_id_on_a_batch_with_no_records_is_denied(
    make_gateway: GatewayFactory, body: dict[str, Any]
) -> None:
    # No record reads the query then, so the share as a whole must.
    route = {
        **BATCH_ROUTE,
        "path": "/v1/qbatch",
        "fields": [{"path": "query.guarantor_id", "category": "identity.id_number"}],
    }
    gw = await make_gateway([contract(terms={"minors": "deny"}, routes=[*ROUTES, route])])
    target = f"/acme/v1/qbatch?guarantor_id={resident_id(CHILD_BORN)}"
    response = await gw.share("POST", target, json=body)
    await assert_refused(gw, response, 403, "minor_denied")


async def test_an_id_number_as_a_subtree_key_counts(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(terms={"minors": "deny"}, routes=[*ROUTES, SUBTREE_ROUTE])])
    doc = {"applicant": {"user_id": "u-1", "docs": {resident_id(CHILD_BORN): "front.png"}}}
    response = await gw.share("POST", "/acme/v1/documents-of", json=doc)
    await assert_refused(gw, response, 403, "minor_denied")


async def test_business_data_about_no_subject_counts_no_record(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 1}, routes=[*ROUTES, GUARANTOR_ROUTE])]
    )
    for _ in range(2):
        response = await gw.share(
            "POST", "/acme/v1/guaranteed", json={"applicants": [], "note": "batch 7"}
        )
        assert response.status == 200, await response.text()
        assert last_record(gw.log.records).records == 0
        # A route naming no subject at all: one record about nobody, counted only for personal
        # data, and a note is not.
        response = await gw.share(
            "POST", "/acme/v1/notes", json={"note": "n"}, purpose="service_delivery"
        )
        assert response.status == 200, await response.text()
        assert last_record(gw.log.records).records == 0


async def test_daily_counts_take_all_or_nothing() -> None:
    counts = DailyCounts()
    day = date(2025, 6, 1)
    assert await counts.take("acme", day, 3, 5)
    assert not await counts.take("acme", day, 3, 5)
    assert await counts.take("acme", day, 2, 5)
    assert not await counts.take("acme", day, 1, 5)
    assert await counts.take("other", day, 5, 5)  # each partner its own count
    assert await counts.take("acme", day, 0, 5)
    assert await counts.take("acme", day, 0, 4)  # nothing taken fits under any cap
    assert not await counts.take("acme", day, 1, 4)


async def test_daily_counts_roll_over_at_a_new_day() -> None:
    counts = DailyCounts()
    assert await counts.take("acme", date(2025, 6, 1), 5, 5)
    assert await counts.take("acme", date(2025, 6, 2), 5, 5)
    assert not await counts.take("acme", date(2025, 6, 2), 1, 5)
    # A late request of the day before counts against the new day and resets nothing.
    assert not await counts.take("acme", date(2025, 6, 1), 1, 5)
    assert not await counts.take("acme", date(2025, 6, 2), 1, 5)


async def test_sliding_windows_seeded_after_a_restart() -> None:
    now = [1000.0]
    windows = SlidingWindows(clock=lambda: now[0])
    # Ten a second: nine shares 0.2 s ago and one 1.5 s ago (outside the window) before it.
    windows.seed("acme", 10, [0.2] * 9 + [1.5])
    assert await windows.acquire("acme", 10, "a") is None
    assert await windows.acquire("acme", 10, "b") is not None
    windows.seed("slow", 1 / 60, [30.0, 5.0])  # one a minute: the latest counts
    wait = await windows.acquire("slow", 1 / 60, "c")
    assert wait == pytest.approx(55.0)
    await windows.release("slow", "c")  # a refusal gives back its own place only
    assert await windows.acquire("slow", 1 / 60, "d") is not None


async def test_daily_counts_seeded_after_a_restart() -> None:
    counts = DailyCounts()
    counts.seed(date(2025, 6, 1), {"acme": 4, "other": 1})
    assert await counts.take("acme", date(2025, 6, 1), 1, 5)
    assert not await counts.take("acme", date(2025, 6, 1), 1, 5)
    assert await counts.take("other", date(2025, 6, 1), 4, 5)
    assert await counts.take("acme", date(2025, 6, 2), 5, 5)  # the seeded day has passed


async def test_quota_counts_records_and_answers_429(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(terms={"max_records_per_day": 3}, routes=ROUTES)])
    two = {"applicants": [person("a"), person("b")]}
    response = await gw.share("POST", "/acme/v1/batch", json=two)
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).records == 2

    before = datetime.now(SHANGHAI)
    response = await gw.share("POST", "/acme/v1/batch", json=two)
    after = datetime.now(SHANGHAI)
    assert response.status == 429
    assert (await error_of(response))["code"] == "quota_exceeded"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 86400
    if before.date() == after.date():
        assert seconds_to_midnight(after) - 1 <= retry_after <= seconds_to_midnight(before) + 1
    assert len(gw.partner.received) == 1
    record = last_record(gw.log.records)
    assert (record.decision, record.reason, record.records) == ("denied", "quota_exceeded", 0)

    # The refused batch took nothing: one more record still fits, a second does not.
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 429
    assert len(gw.partner.received) == 2


async def test_batches_at_once_never_take_more_records_than_the_daily_cap(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(terms={"max_records_per_day": 3}, routes=ROUTES)])
    gw.partner.reply.delay_s = 0.1  # every share still in flight while the others are judged
    two = {"applicants": [person("a"), person("b")]}
    answers = await asyncio.gather(
        *(gw.share("POST", "/acme/v1/batch", json=two) for _ in range(6))
    )
    # Room for one batch of two: a second would make four records.
    assert sorted(r.status for r in answers) == [200] + [429] * 5
    [seen] = gw.partner.received
    assert len(seen.json()["applicants"]) == 2
    records = gw.log.records
    assert sorted((r.decision, r.reason, r.records) for r in records) == [
        *[("denied", "quota_exceeded", 0)] * 5,
        ("shared", "shared", 2),
    ]
    # The one record left still goes.
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()


async def test_a_share_just_before_local_midnight_counts_on_its_day_and_one_at_midnight_on_the_next(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway([contract(terms={"max_records_per_day": 1}, routes=ROUTES)])
    eve = datetime(2030, 6, 1, 23, 59, 59, 900000, tzinfo=SHANGHAI)
    monkeypatch.setattr(pipeline_module, "datetime", stopped_clock(eve))
    assert (await gw.share("POST", "/acme/v1/assess", json=applicant())).status == 200
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    await assert_refused_on(gw, response, "quota_exceeded", shared_before=1)
    assert response.headers["Retry-After"] == "1"  # a tenth of a second, never 0
    midnight = datetime(2030, 6, 2, 0, 0, tzinfo=SHANGHAI)
    monkeypatch.setattr(pipeline_module, "datetime", stopped_clock(midnight))
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 2
    shared = [r.ts for r in gw.log.records if r.decision == "shared"]
    assert [ts.astimezone(SHANGHAI).date() for ts in shared] == [eve.date(), midnight.date()]


async def assert_refused_on(
    gw: Any, response: ClientResponse, code: str, *, shared_before: int
) -> None:
    error = await error_of(response)
    assert (response.status, error["code"]) == (429, code)
    assert len(gw.partner.received) == shared_before
    denied = last_record(gw.log.records)
    assert (denied.share_id, denied.decision, denied.reason, denied.records) == (
        error["share_id"],
        "denied",
        code,
        0,
    )


async def test_a_share_that_never_reached_the_partner_counts_no_record_and_one_timed_out_does(
    make_gateway: GatewayFactory,
) -> None:
    doc = contract(terms={"max_records_per_day": 1}, routes=ROUTES)
    doc["upstream"]["timeout_s"] = 0.2
    gw = await make_gateway([doc])
    await gw.partner.close()  # the connection is refused: not a byte of the share left
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert (response.status, (await error_of(response))["code"]) == (502, "upstream_error")
    failed = last_record(gw.log.records)
    outcome = gw.log.outcome_of(failed.share_id)
    assert outcome is not None
    assert outcome.outcome == "error"
    await gw.partner.start()
    await reload_as(gw, doc)  # at the partner's new port
    # The partner may have had a share it did not answer in time: it counts.
    gw.partner.reply.delay_s = 1.0
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert (response.status, (await error_of(response))["code"]) == (504, "upstream_timeout")
    assert len(gw.partner.received) == 1
    gw.partner.reply.delay_s = 0.0
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    await assert_refused_on(gw, response, "quota_exceeded", shared_before=1)


async def test_a_share_holding_more_records_than_a_whole_day_allows_is_not_told_to_retry(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 2, "rate_limit_per_s": 1}, routes=ROUTES)]
    )
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # every request "at once"
    three = {"applicants": [person("a"), person("b"), person("c")]}
    response = await gw.share("POST", "/acme/v1/batch", json=three)
    # Not even at midnight: no Retry-After sends the caller back with the same records.
    await assert_refused(gw, response, 429, "quota_exceeded")
    assert "Retry-After" not in response.headers
    assert (await error_of(response))["message"] == (
        "acme may receive 2 records per day, and this share holds 3: no day has room for it; "
        "send them in smaller shares"
    )
    # It took nothing of the day's records nor of the second's one share.
    two = {"applicants": [person("a"), person("b")]}
    response = await gw.share("POST", "/acme/v1/batch", json=two)
    assert response.status == 200, await response.text()
    [seen] = gw.partner.received
    assert [item["name"] for item in seen.json()["applicants"]] == ["Li", "Li"]
    assert last_record(gw.log.records).records == 2


async def test_a_share_the_daily_cap_refuses_takes_no_place_in_the_rate(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(
        [contract(terms={"max_records_per_day": 1, "rate_limit_per_s": 1}, routes=ROUTES)]
    )
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # every request "at once"
    two = {"applicants": [person("a"), person("b")]}
    response = await gw.share("POST", "/acme/v1/batch", json=two)
    assert response.status == 429
    assert (await error_of(response))["code"] == "quota_exceeded"
    # Nothing went out: the rate's one share of this second is still free.
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 1


@pytest.mark.parametrize(
    ("timezone", "now", "retry_after"),
    [
        ("Asia/Shanghai", datetime(2025, 6, 1, 23, 59, 30), "30"),
        ("Asia/Shanghai", datetime(2025, 6, 1, 23, 59, 59, 500000), "1"),
        ("Asia/Shanghai", datetime(2025, 6, 1, 0, 0), "86400"),
        # Clocks go forward at 02:00 on 30 March in Berlin: that day has 23 hours.
        ("Europe/Berlin", datetime(2025, 3, 30, 0, 0), "82800"),
        ("Europe/Berlin", datetime(2025, 10, 26, 0, 0), "90000"),
    ],
)
async def test_quota_retry_after_is_the_time_to_local_midnight(
    tmp_path: Path, timezone: str, now: datetime, retry_after: str
) -> None:
    doc = contract(terms={"max_records_per_day": 1})
    policy = compile_contracts(tmp_path / "c", doc, timezone=timezone)
    now = now.replace(tzinfo=ZoneInfo(timezone))
    terms = Terms()
    subjects = [Subject(None, "u-1", None)]
    await terms.check(flow_for(policy, "/v1/assess", subjects), request_with(), now)
    with pytest.raises(QuotaExceeded) as refused:
        await terms.check(flow_for(policy, "/v1/assess", subjects), request_with(), now)
    assert refused.value.headers == {"Retry-After": retry_after}


async def test_a_subtree_over_each_whole_record_is_read_for_minors(
    make_gateway: GatewayFactory,
) -> None:
    # `applicants[].**` is each record whole: it was selected as a path `**`, and every share
    # of such a route failed with a 500.
    route = {
        **BATCH_ROUTE,
        "path": "/v1/records-whole",
        "fields": [{"path": "applicants[].**", "category": "identity.id_number"}],
    }
    gw = await make_gateway([contract(terms={"minors": "deny"}, routes=[*ROUTES, route])])
    child = {"applicants": [{"user_id": "c", "documents": {"id": resident_id(CHILD_BORN)}}]}
    response = await gw.share("POST", "/acme/v1/records-whole", json=child)
    await assert_refused(gw, response, 403, "minor_denied")
    assert (await error_of(response))["details"] == {"record": 0}
    adult = {"applicants": [{"user_id": "a", "documents": {"id": resident_id(ADULT_BORN)}}]}
    response = await gw.share("POST", "/acme/v1/records-whole", json=adult)
    assert response.status == 200, await response.text()
    assert [seen.json() for seen in gw.partner.received] == [adult]


BIRTH_DATE_FIELD_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/dated",
    "purpose": "credit_assessment",
    "subject": "applicant.user_id",
    "fields": [{"path": "applicant.born", "category": "identity.birth_date"}],
}
BIRTH_DATE_CATEGORIES = [*contract()["categories"], "identity.birth_date"]
GUARANTOR_BIRTH_ROUTE: dict[str, Any] = {
    **BATCH_ROUTE,
    "path": "/v1/dated-batch",
    "fields": [
        *BATCH_ROUTE["fields"],
        {"path": "guarantor.born", "category": "identity.birth_date"},
    ],
}


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("dated", lambda born: {"applicant": {"user_id": "u-1", "born": born}}),
        ("dated-batch", lambda born: {"applicants": [person("a")], "guarantor": {"born": born}}),
    ],
    ids=["field", "guarantor"],
)
async def test_a_birth_date_field_not_declared_as_birth_date_still_tells_a_child(
    make_gateway: GatewayFactory, target: str, body: Callable[[str], dict[str, Any]]
) -> None:
    routes = [*ROUTES, BIRTH_DATE_FIELD_ROUTE, GUARANTOR_BIRTH_ROUTE]
    gw = await make_gateway(
        [contract(categories=BIRTH_DATE_CATEGORIES, terms={"minors": "deny"}, routes=routes)]
    )
    response = await gw.share("POST", f"/acme/v1/{target}", json=body(CHILD_BORN.isoformat()))
    await assert_refused(gw, response, 403, "minor_denied")
    adult = body(ADULT_BORN.isoformat())
    response = await gw.share("POST", f"/acme/v1/{target}", json=adult)
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 1


async def test_a_birth_date_field_is_not_read_where_minors_do_not_matter(
    make_gateway: GatewayFactory,
) -> None:
    # `minors: allow`, no consent required: a date in any format goes as the contract says.
    gw = await make_gateway(
        [contract(categories=BIRTH_DATE_CATEGORIES, routes=[*ROUTES, BIRTH_DATE_FIELD_ROUTE])]
    )
    doc = {"applicant": {"user_id": "u-1", "born": "2016/03/04"}}
    response = await gw.share("POST", "/acme/v1/dated", json=doc)
    assert response.status == 200, await response.text()
    assert [seen.json() for seen in gw.partner.received] == [{"applicant": {"born": "2016/03/04"}}]


UPLOAD_OF_ROUTE: dict[str, Any] = {
    "method": "PUT",
    "path": "/v1/files/{file_id}",
    "purpose": "credit_assessment",
    "subject": "query.user_id",
    "content_types": ["application/pdf"],
}


async def test_an_upload_needs_consent_where_the_contracts_sensitive_categories_do(
    make_gateway: GatewayFactory,
) -> None:
    # An upload is not read: under consent_required it may hold the ID number the contract
    # allows, so it goes only on its subject's consent.
    gw = await make_gateway(
        [
            contract(
                terms={"sensitive": SENSITIVE_CONSENT}, routes=[*SUBJECT_ROUTES, UPLOAD_OF_ROUTE]
            )
        ]
    )
    pdf = b"%PDF-1.7 scan of an ID card"

    async def upload() -> Any:
        headers = {"Content-Type": "application/pdf"}
        return await gw.share("PUT", "/acme/v1/files/f-1?user_id=u-1", data=pdf, headers=headers)

    await assert_refused(gw, await upload(), 403, "consent_required")
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry_of(gw).grant("u-1", "acme", "credit_assessment", granted, "C-9")
    response = await upload()
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ("registry:C-9",)
    assert [seen.body for seen in gw.partner.received] == [pdf]


def guarantor_birth_consent_contract() -> dict[str, Any]:
    """A batch route sending a guarantor's birth date, where a child's data needs consent."""
    return contract(
        categories=BIRTH_DATE_CATEGORIES,
        terms={"sensitive": SENSITIVE_CONSENT, "minors": "allow"},
        routes=[GUARANTOR_BIRTH_ROUTE],
    )


async def test_a_childs_birth_date_beside_the_records_needs_consent_no_record_gives(
    make_gateway: GatewayFactory,
) -> None:
    # A birth date is not a sensitive category, so the route loads under consent_required; a
    # child's beside the records is still a child's data, and no record's consent covers it.
    gw = await make_gateway([guarantor_birth_consent_contract()])
    granted = datetime.now(UTC) - timedelta(hours=1)
    registry_of(gw).grant("a", "acme", "credit_assessment", granted, "G")
    doc = {"applicants": [person("a")], "guarantor": {"born": CHILD_BORN.isoformat()}}
    response = await gw.share("POST", "/acme/v1/dated-batch", json=doc)
    await assert_refused(gw, response, 403, "consent_required")
    doc["guarantor"] = {"born": ADULT_BORN.isoformat()}
    response = await gw.share("POST", "/acme/v1/dated-batch", json=doc)
    assert response.status == 200, await response.text()


def test_contracts_explain_refuses_a_childs_birth_date_beside_the_records_as_the_gateway_does(
    tmp_path: Path,
) -> None:
    # It depends on the body and the date alone, as the minors checks the dry run makes do.
    policy = compile_contracts(tmp_path / "contracts", guarantor_birth_consent_contract())
    doc = {"applicants": [person("a")], "guarantor": {"born": CHILD_BORN.isoformat()}}
    now = datetime.now(UTC)
    target = "POST /v1/dated-batch"
    with pytest.raises(ConsentRequired):
        explain(acme(policy), target, "credit_assessment", orjson.dumps(doc), now=now, max_depth=64)
    doc["guarantor"] = {"born": ADULT_BORN.isoformat()}
    explained = explain(
        acme(policy), target, "credit_assessment", orjson.dumps(doc), now=now, max_depth=64
    )
    assert explained.result.document["guarantor"] == {"born": ADULT_BORN.isoformat()}


NAMELESS_BATCH_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/names",
    "purpose": "credit_assessment",
    "records": "applicants[]",
    "fields": [{"path": "applicants[].name", "category": "identity.name"}],
}


@pytest.mark.parametrize("odd", [1, "x", None, ["Li"]])
async def test_a_record_that_is_not_an_object_is_refused_where_records_have_fields(
    make_gateway: GatewayFactory, odd: object
) -> None:
    # The filter would drop it, yet it would count as a record (and against the daily cap).
    gw = await make_gateway([contract(routes=[*ROUTES, NAMELESS_BATCH_ROUTE])])
    body = {"applicants": [{"name": "Li"}, odd]}
    response = await gw.share("POST", "/acme/v1/names", json=body)
    await assert_refused(gw, response, 400, "malformed_body")
    assert "record 1 of applicants[] is not an object" in (await error_of(response))["message"]


@pytest.mark.parametrize("odd", [{"first": "Li"}, ["Zhang"], {}])
async def test_a_record_that_is_no_single_value_is_refused_where_records_are_values(
    make_gateway: GatewayFactory, odd: object
) -> None:
    # `records: names[]` sent as they are: the filter drops a container, which would count.
    route = {
        **NAMELESS_BATCH_ROUTE,
        "records": "names[]",
        "fields": [{"path": "names[]", "category": "identity.name"}],
    }
    gw = await make_gateway([contract(routes=[*ROUTES, route])])
    response = await gw.share("POST", "/acme/v1/names", json={"names": ["Wang Wei", odd]})
    await assert_refused(gw, response, 400, "malformed_body")
    assert "record 1 of names[] is not a single value" in (await error_of(response))["message"]
    # Values of any kind are records, each counted.
    response = await gw.share("POST", "/acme/v1/names", json={"names": ["Wang Wei", 7, None]})
    assert response.status == 200, await response.text()
    assert gw.partner.received[0].json() == {"names": ["Wang Wei", 7, None]}
    assert gw.log.records[-1].records == 3


@pytest.mark.parametrize(
    ("fields", "odd", "expected"),
    [
        (["batch[][]"], "Li", "an array"),
        (["batch[][]"], {"name": "Li"}, "an array"),
    ],
)
async def test_a_record_of_no_shape_the_route_sends_is_refused(
    make_gateway: GatewayFactory, fields: list[str], odd: object, expected: str
) -> None:
    route = {
        **NAMELESS_BATCH_ROUTE,
        "records": "batch[]",
        "fields": [{"path": path, "category": "identity.name"} for path in fields],
    }
    gw = await make_gateway([contract(routes=[*ROUTES, route])])
    response = await gw.share("POST", "/acme/v1/names", json={"batch": [["Wang"], odd]})
    await assert_refused(gw, response, 400, "malformed_body")
    assert f"record 1 of batch[] is not {expected}" in (await error_of(response))["message"]


async def test_records_of_a_whole_subtree_may_be_any_value_and_each_counts(
    make_gateway: GatewayFactory,
) -> None:
    route = {
        **NAMELESS_BATCH_ROUTE,
        "fields": [{"path": "applicants[].**", "category": "identity.name"}],
    }
    gw = await make_gateway([contract(routes=[*ROUTES, route])])
    body = {"applicants": [{"name": "Li"}, "Wang"]}
    response = await gw.share("POST", "/acme/v1/names", json=body)
    assert response.status == 200, await response.text()
    assert gw.partner.received[0].json() == body
    assert gw.log.records[-1].records == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"batch": {"applicants": {"0": {"user_id": "c"}}}}, "batch.applicants is not an array"),
        ({"batch": [{"applicants": [{"user_id": "c"}]}]}, "batch is not an object"),
        ({"batch": {"applicants": "c"}}, "batch.applicants is not an array"),
        ({"batch": {"applicants": None}}, "batch.applicants is not an array"),
    ],
)
async def test_records_sent_other_than_where_the_route_declares_them_are_refused(
    make_gateway: GatewayFactory, body: dict[str, Any], message: str
) -> None:
    # Read as no records, they would need no one's consent, yet `batch.**` would send them.
    gw = await make_gateway([contract(terms={"minors": "allow"}, routes=[NESTED_BATCH_ROUTE])])
    response = await gw.share("POST", "/acme/v1/nested", json=body)
    await assert_refused(gw, response, 400, "malformed_body")
    assert message in (await error_of(response))["message"]
    response = await gw.share("POST", "/acme/v1/nested", json={"batch": {"applicants": []}})
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("spelled", ["u-1 ", "\u200bu-1", "ｕ-１"])
async def test_a_consent_token_naming_its_subject_in_another_spelling_is_consent(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    consent_key: SigningKey,
    spelled: str,
) -> None:
    # The consent service may write the id otherwise than the caller does: one person still.
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    token = consent_token(consent_key, subject=spelled, jti="ct-spelled")
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    assert response.status == 200, await response.text()
    assert len(gw.partner.received) == 1
    record = last_record(gw.log.records)
    assert (record.decision, record.consent_basis) == ("shared", ("token:ct-spelled",))


async def test_a_withdrawal_taking_effect_at_the_instant_of_the_share_stops_a_token(
    make_gateway: GatewayFactory,
    consent_settings: dict[str, Any],
    consent_key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    instant = datetime.fromtimestamp(int(time.time()), UTC)
    monkeypatch.setattr(pipeline_module, "datetime", stopped_clock(instant))
    registry_of(gw).withdraw("u-1", "acme", "credit_assessment", instant, "W-1")
    token = consent_token(consent_key, jti="ct-1", now=instant.timestamp() - 60, ttl_s=3600)
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    await assert_refused_after(gw, response, shared_before=0)
    assert "predates a withdrawal" in (await error_of(response))["message"]


async def test_a_repeated_consent_token_header_is_no_consent(
    make_gateway: GatewayFactory, consent_settings: dict[str, Any], consent_key: SigningKey
) -> None:
    # Which of two tokens another reader would take is not defined: neither counts.
    gw = await make_gateway([third_party_contract()], settings=consent_settings)
    token = consent_token(consent_key, jti="ct-1")
    headers = CIMultiDict(
        [
            ("Authorization", f"Bearer {gw.token('share:acme:*')}"),
            ("X-Share-Purpose", "credit_assessment"),
            ("Content-Type", "application/json"),
            ("X-Consent-Token", token),
            ("X-Consent-Token", token),
        ]
    )
    response = await gw.client.post(
        "/acme/v1/assess", data=orjson.dumps(applicant()), headers=headers
    )
    await assert_refused(gw, response, 403, "consent_required")
    assert "X-Consent-Token header is repeated" in (await error_of(response))["message"]
    response = await gw.share(
        "POST", "/acme/v1/assess", json=applicant(), headers={"X-Consent-Token": token}
    )
    assert response.status == 200, await response.text()
    assert last_record(gw.log.records).consent_basis == ("token:ct-1",)


async def test_a_batch_of_no_records_to_a_third_party_is_refused_for_want_of_consent(
    make_gateway: GatewayFactory,
) -> None:
    # Every share to a third party goes on its subjects' consent: one naming none has none.
    gw = await make_gateway([third_party_contract()])
    response = await gw.share("POST", "/acme/v1/batch", json={"applicants": []})
    await assert_refused(gw, response, 403, "consent_required")
    assert "names no data subject" in (await error_of(response))["message"]


# A child's birth date on a route that names no subject: its fields need no consent, a child's
# data does, and no one's can be shown.
NAMELESS_CHILD_ROUTE: dict[str, Any] = {
    "method": "POST",
    "path": "/v1/unnamed-children",
    "purpose": "credit_assessment",
    "birth_date": "child.birth_date",
    "fields": [{"path": "child.name", "category": "identity.name"}],
}


async def test_a_childs_data_on_a_route_naming_no_subject_is_refused_for_want_of_consent(
    make_gateway: GatewayFactory,
) -> None:
    terms = {"sensitive": SENSITIVE_CONSENT, "minors": "allow"}
    gw = await make_gateway([contract(terms=terms, routes=[*SUBJECT_ROUTES, NAMELESS_CHILD_ROUTE])])
    child = {"child": {"name": "Li", "birth_date": CHILD_BORN.isoformat()}}
    response = await gw.share("POST", "/acme/v1/unnamed-children", json=child)
    await assert_refused(gw, response, 403, "consent_required")
    assert "names no data subject field" in (await error_of(response))["message"]
    adult = {"child": {"name": "Li", "birth_date": ADULT_BORN.isoformat()}}
    response = await gw.share("POST", "/acme/v1/unnamed-children", json=adult)
    assert response.status == 200, await response.text()
    assert [seen.json() for seen in gw.partner.received] == [{"child": {"name": "Li"}}]


async def test_a_share_refused_for_the_daily_cap_takes_no_place_in_the_rate(
    make_gateway: GatewayFactory,
) -> None:
    terms = {"max_records_per_day": 1, "rate_limit_per_s": 2}
    gw = await make_gateway([contract(terms=terms, routes=ROUTES)])
    gw.runtime.terms.limiter = SlidingWindows(clock=FakeClock())  # every request "at once"
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert response.status == 200, await response.text()
    response = await gw.share("POST", "/acme/v1/assess", json=applicant())
    assert (response.status, (await error_of(response))["code"]) == (429, "quota_exceeded")
    denied = last_record(gw.log.records)
    assert (denied.decision, denied.reason, denied.records) == ("denied", "quota_exceeded", 0)
    # The second place of the second is still free: a share of no records fits the cap.
    response = await gw.share("POST", "/acme/v1/batch", json={"applicants": []})
    assert response.status == 200, await response.text()
    assert [seen.json() for seen in gw.partner.received][1:] == [{"applicants": []}]
    shared = last_record(gw.log.records)
    assert (shared.decision, shared.records) == ("shared", 0)


async def test_a_share_judged_before_midnight_and_counted_after_it_gives_back_the_new_day(
    tmp_path: Path,
) -> None:
    policy = compile_contracts(tmp_path / "c", contract(terms={"max_records_per_day": 2}))
    terms = Terms(limiter=SlidingWindows(clock=FakeClock()))
    subjects = [Subject(None, "u-1", None)]
    eve = datetime(2025, 6, 1, 23, 59, 59, tzinfo=SHANGHAI)
    after = datetime(2025, 6, 2, 0, 0, 1, tzinfo=SHANGHAI)

    async def check(share_id: str, now: datetime) -> Flow:
        flow = flow_for(policy, "/v1/assess", subjects)
        flow.share_id = share_id
        await terms.check(flow, request_with(), now)
        return flow

    await check("first-of-2-june", after)  # the counter has rolled over to 2 June
    late = await check("judged-on-1-june", eve)  # counted against 2 June: 2 of 2
    # Its record could not be written: what it took of 2 June is free again.
    await terms.give_back(late.volume_taken)
    await check("second-of-2-june", after)
    with pytest.raises(QuotaExceeded):
        await check("third-of-2-june", after)


async def test_a_share_given_back_after_midnight_frees_nothing_of_the_new_day() -> None:
    counts = DailyCounts()
    assert await counts.take("acme", date(2025, 6, 1), 3, 5)
    assert await counts.take("acme", date(2025, 6, 2), 5, 5)
    # Its record failed after midnight: what it took of 1 June went with that day.
    await counts.give_back("acme", date(2025, 6, 1), 3)
    assert not await counts.take("acme", date(2025, 6, 2), 1, 5)
