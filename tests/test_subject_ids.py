"""One data subject, however its id is written: one reference in the share log and in the
consent registry, so `logs subject`, the admin API and consent find every share and grant."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONTRACT, HASH_KEY, Gateway, GatewayFactory, contract
from tokens import SigningKey, mint, rsa_key

from gateway.cli import build_parser
from gateway.consent import ConsentInputError, ConsentRegistry
from gateway.keys import canonical_subject_id, keyed_hash, subject_ref, subject_ref_key

ADMIN = "gateway:admin"
ASSESS = "/acme/v1/assess"

# Valid resident ID numbers (division, date and check digit), one with the check digit X.
ID_NUMBER = "110105198806052715"
ID_NUMBER_X = "11010519880605100X"
FIRST_GENERATION = "110105880605271"
# Laid out like an ID number, but its check digit is wrong: a mistyped number is still one.
MISTYPED = "110105198806052719"
# A foreign permanent resident's ID number (2023 edition: `9`, a mainland province, a
# nationality code, the birth date), valid, with the check digit X, and mistyped.
PERMANENT_RESIDENT = "943760201506016674"
PERMANENT_RESIDENT_X = "94427620100105002X"
PERMANENT_RESIDENT_MISTYPED = "943760201506016675"
FULL_WIDTH = str.maketrans(
    "0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"
)
MOBILE = "13800138000"
NFC_NAME = "Jos\u00e9"  # é precomposed
NFD_NAME = unicodedata.normalize("NFD", NFC_NAME)  # e and a combining acute accent

# Each of these is written the way it is canonically: its reference is what it always was.
CANONICAL = [
    "u-1",
    "subject-alice-7731",
    "123",
    NFC_NAME,
    "\u7528\u6237-42",
    ID_NUMBER,
    ID_NUMBER_X,
    FIRST_GENERATION,
    MISTYPED,
    "110105-1988-0605-27",  # too short for an ID number: its dashes are its own
    "6222021234567890123",  # a card number: not laid out like an ID number
    PERMANENT_RESIDENT,
    PERMANENT_RESIDENT_X,
    PERMANENT_RESIDENT_MISTYPED,
    "981760 20150601 6674",  # Hong Kong issues no such card: its spaces are its own
    MOBILE,
    "8613800138000",  # without `+` or `00`, 86 is no country code: perhaps an account number
    "+8612345678901",  # no mobile number follows the code
    "+1 415 555 0100",  # not a mainland mobile number: its spaces are its own
]


@pytest.mark.parametrize("subject_id", CANONICAL)
def test_an_id_written_canonically_keeps_its_reference(subject_id: str) -> None:
    key = subject_ref_key(HASH_KEY.encode())
    assert canonical_subject_id(subject_id) == subject_id
    # What share logs and consent registries written before hold for this subject: an HMAC of
    # its id under the master key's `subject-ref` sub-key, and under no other.
    sub_key = hmac.new(HASH_KEY.encode(), b"share-gateway/subject-ref", hashlib.sha256).digest()
    written = hmac.new(sub_key, subject_id.encode(), hashlib.sha256).hexdigest()
    assert subject_ref(key, subject_id) == keyed_hash(key, subject_id) == written


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (" u-1\t", "u-1"),
        ("u-1\u3000", "u-1"),  # an ideographic space
        (NFD_NAME, NFC_NAME),
        (f" {NFD_NAME} ", NFC_NAME),
        ("110105 19880605 2715", ID_NUMBER),
        ("110105-1988-0605-2715", ID_NUMBER),
        ("110105/19880605/2715", ID_NUMBER),
        (ID_NUMBER.translate(FULL_WIDTH), ID_NUMBER),
        ("11010519880605100x", ID_NUMBER_X),
        ("110105 19880605 100x ", ID_NUMBER_X),
        ("110105 880605 271", FIRST_GENERATION),
        ("110105-1988-0605-2719", MISTYPED),
        (ID_NUMBER.translate(str.maketrans("0123456789", "〇一二三四五六七八九")), ID_NUMBER),
        (ID_NUMBER_X.translate(str.maketrans("0123456789", "零壹贰叁肆伍陆柒捌玖")), ID_NUMBER_X),
        ("943760 20150601 6674", PERMANENT_RESIDENT),
        ("943760-2015-0601-6674", PERMANENT_RESIDENT),
        (PERMANENT_RESIDENT.translate(FULL_WIDTH), PERMANENT_RESIDENT),
        ("94427620100105002x", PERMANENT_RESIDENT_X),
        ("944276/20100105/002x ", PERMANENT_RESIDENT_X),
        ("943760 2015 0601 6675", PERMANENT_RESIDENT_MISTYPED),
        ("+86 138 0013 8000", MOBILE),
        ("+8613800138000", MOBILE),
        ("0086-138-0013-8000", MOBILE),
        ("138-0013-8000", MOBILE),
        ("138 0013 8000", MOBILE),
        (
            "\uff0b\uff18\uff16 \uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff10",
            MOBILE,
        ),
    ],
)
def test_spellings_of_one_id_are_one_canonical_id(written: str, canonical: str) -> None:
    assert canonical_subject_id(written) == canonical
    assert canonical_subject_id(canonical) == canonical


def subject_route(subject: str) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = copy.deepcopy(BASE_CONTRACT["routes"])
    routes[0]["subject"] = subject
    return routes


async def share_ids_for(
    gw: Gateway, subject: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, list[str]]:
    """The shares found for `subject` by `logs subject`, `logs query --subject` and the admin
    API's `/_gateway/shares?subject=`."""
    settings = gw.runtime.settings
    found: dict[str, list[str]] = {}
    for name, argv in (
        ("logs subject", ["logs", "subject", subject]),
        ("logs query", ["logs", "query", "--subject", subject, "--decision", "shared"]),
    ):
        args = build_parser().parse_args([*argv, "--format", "json"])
        capsys.readouterr()  # the gateway's own log lines so far
        assert args.handler(args, settings) == 0
        found[name] = [row["share_id"] for row in json.loads(capsys.readouterr().out)]
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    answer = await gw.client.get("/_gateway/shares", params={"subject": subject}, headers=admin)
    assert answer.status == 200, await answer.text()
    found["admin api"] = [row["share_id"] for row in (await answer.json())["shares"]]
    return found


async def share_as(gw: Gateway, field: str, spellings: Sequence[object]) -> list[str]:
    """Share once with the applicant's `field` written each way; the share ids the partner
    received, in order."""
    for spelling in spellings:
        answer = await gw.share("POST", ASSESS, json={"applicant": {field: spelling}})
        assert answer.status == 200, await answer.text()
    sent = [seen.headers["X-Share-Id"] for seen in gw.partner.received]
    assert len(sent) == len(spellings)
    return sent


@pytest.fixture
def hash_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands read the master key as the gateway does: from the environment.
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)


@pytest.mark.usefixtures("hash_key_env")
async def test_every_spelling_of_an_id_number_is_found_as_one_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await make_gateway(
        [contract(routes=subject_route("applicant.id_number"))], durable_log=True
    )
    spellings = [
        ID_NUMBER_X,
        "11010519880605100x",
        "110105 19880605 100X",
        "110105-1988-0605-100x",
        f"{ID_NUMBER_X} ",
    ]
    sent = await share_as(gw, "id_number", spellings)
    for asked in ("110105 1988 0605 100x", ID_NUMBER_X):
        found = await share_ids_for(gw, asked, capsys)
        assert found == {"logs subject": sent, "logs query": sent, "admin api": sent}


@pytest.mark.usefixtures("hash_key_env")
async def test_every_spelling_of_a_mobile_number_is_found_as_one_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # Many platforms name their users by phone; the access request may come with +86.
    gw = await make_gateway(durable_log=True)
    spellings = [MOBILE, "+86 138 0013 8000", "0086-13800138000", "138-0013-8000"]
    sent = await share_as(gw, "user_id", spellings)
    for asked in (MOBILE, "+8613800138000", "138 0013 8000"):
        found = await share_ids_for(gw, asked, capsys)
        assert found == {"logs subject": sent, "logs query": sent, "admin api": sent}
    found = await share_ids_for(gw, "8613800138000", capsys)
    assert found == {"logs subject": [], "logs query": [], "admin api": []}


@pytest.mark.usefixtures("hash_key_env")
async def test_a_grant_to_a_mobile_number_covers_shares_naming_it_in_another_spelling(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    third_party = contract(
        partner={"relationship": "third_party"},
        terms={"sensitive": {"allowed": ["identity.id_number"], "consent_required": True}},
        routes=subject_route("applicant.user_id")[:1],
    )
    gw = await make_gateway([third_party])
    import_csv(gw, tmp_path, "+86 138 0013 8000,acme,credit_assessment,2025-01-01,,C-9")
    answer = await gw.share("POST", ASSESS, json={"applicant": {"user_id": MOBILE}})
    assert answer.status == 200, await answer.text()
    assert gw.log.records[-1].consent_basis == ("registry:C-9",)
    assert len(gw.partner.received) == 1


@pytest.mark.usefixtures("hash_key_env")
async def test_a_mistyped_id_number_in_groups_is_found_as_one_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await make_gateway(
        [contract(routes=subject_route("applicant.id_number"))], durable_log=True
    )
    sent = await share_as(
        gw, "id_number", [MISTYPED, "110105 19880605 2719", "110105-1988-0605-2719"]
    )
    found = await share_ids_for(gw, MISTYPED, capsys)
    assert found == {"logs subject": sent, "logs query": sent, "admin api": sent}


@pytest.mark.usefixtures("hash_key_env")
async def test_an_id_with_invisible_characters_at_its_ends_is_one_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pasted from a web page or a right-to-left form: a zero-width space, a BOM, the direction
    # isolates and marks around an id are nothing an operator sees, or types.
    gw = await make_gateway(
        [contract(routes=subject_route("applicant.id_number"))], durable_log=True
    )
    spellings = [
        "u-100234\u200b",
        "\ufeffu-100234",
        "\u2066u-100234\u2069",
        " \u200e u-100234\u00ad\u3000",
        f"{ID_NUMBER_X}\u200b",
    ]
    sent = await share_as(gw, "id_number", spellings)
    found = await share_ids_for(gw, "u-100234", capsys)
    assert found == {"logs subject": sent[:4], "logs query": sent[:4], "admin api": sent[:4]}
    found = await share_ids_for(gw, f"\u200b{ID_NUMBER_X}", capsys)
    assert found == {"logs subject": sent[4:], "logs query": sent[4:], "admin api": sent[4:]}
    # Inside an id an invisible character may be part of it (a Persian name's non-joiner).
    found = await share_ids_for(gw, "u-100\u200c234", capsys)
    assert found == {"logs subject": [], "logs query": [], "admin api": []}


@pytest.mark.usefixtures("hash_key_env")
async def test_an_id_in_full_width_or_other_digits_is_one_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # A Chinese input method types full-width letters and digits; other scripts their own
    # digits. An operator types the id in ASCII.
    gw = await make_gateway(durable_log=True)
    spellings: list[object] = [
        "u-100234",
        "\uff55\uff0d\uff11\uff10\uff10\uff12\uff13\uff14",  # ｕ－１００２３４
        "u-\uff11\uff10\uff10\uff12\uff13\uff14",
        "u-\u0661\u0660\u0660\u0662\u0663\u0664",  # Arabic-Indic digits
        100234,
        "\uff11\uff10\uff10\uff12\uff13\uff14",
    ]
    sent = await share_as(gw, "user_id", spellings)
    for asked, expected in (
        ("u-100234", sent[:4]),
        ("\uff55-100234", sent[:4]),
        ("100234", sent[4:]),
    ):
        found = await share_ids_for(gw, asked, capsys)
        assert found == {"logs subject": expected, "logs query": expected, "admin api": expected}
    # Letters keep their case: `U-100234` may be another account.
    found = await share_ids_for(gw, "U-100234", capsys)
    assert found == {"logs subject": [], "logs query": [], "admin api": []}


@pytest.mark.usefixtures("hash_key_env")
async def test_a_name_in_nfd_or_with_spaces_around_it_is_one_subject(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await make_gateway(durable_log=True)
    sent = await share_as(gw, "user_id", [NFC_NAME, NFD_NAME, f"{NFC_NAME} ", f"\t{NFD_NAME}"])
    for asked in (NFC_NAME, f"{NFD_NAME} "):
        found = await share_ids_for(gw, asked, capsys)
        assert found == {"logs subject": sent, "logs query": sent, "admin api": sent}


async def test_a_number_and_its_digits_are_one_subject_with_the_reference_they_had(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    for user_id in (123, "123", " 123"):
        answer = await gw.share("POST", ASSESS, json={"applicant": {"user_id": user_id}})
        assert answer.status == 200, await answer.text()
    assert len(gw.partner.received) == 3
    # The very reference share logs written before this change hold for the subject "123".
    old = keyed_hash(gw.runtime.subject_key, "123")
    assert [record.subject_refs for record in gw.log.records] == [(old,)] * 3


@pytest.mark.parametrize("blank", ["   ", "\u3000", "\t", "\u200b", " \ufeff "])
async def test_a_subject_id_of_spaces_only_is_no_id(
    make_gateway: GatewayFactory, blank: str
) -> None:
    gw = await make_gateway()
    answer = await gw.share("POST", ASSESS, json={"applicant": {"user_id": blank, "name": "W"}})
    assert answer.status == 400
    assert (await answer.json())["error"]["code"] == "malformed_body"
    assert gw.partner.received == []


@pytest.mark.usefixtures("hash_key_env")
async def test_a_lookup_of_spaces_only_is_refused_not_answered_with_no_one(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await make_gateway(durable_log=True)
    settings = gw.runtime.settings
    for argv in (
        ["logs", "subject", " "],
        ["logs", "query", "--subject", " "],
        ["consent", "show", " "],
    ):
        args = build_parser().parse_args(argv)
        assert args.handler(args, settings) == 2, argv
        assert "empty" in capsys.readouterr().err
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    for endpoint in ("/_gateway/shares", "/_gateway/consent"):
        answer = await gw.client.get(endpoint, params={"subject": " "}, headers=admin)
        assert answer.status == 400, endpoint


@pytest.mark.usefixtures("hash_key_env")
async def test_a_subject_id_holding_u_fffd_is_refused_wherever_an_id_comes_in(
    make_gateway: GatewayFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # U+FFFD stands for bytes a decoder lost: "u-\ufffd7" may be u-é7 as much as u-ü7. Stored,
    # a grant was found by `consent show` only, and would count for whoever else came out so.
    lost = "u-\ufffd7"
    gw = await make_gateway(durable_log=True)
    registry = gw.runtime.terms.registry
    assert registry is not None
    shared = await gw.share("POST", ASSESS, json={"applicant": {"user_id": lost, "name": "W"}})
    assert shared.status == 400
    assert (await shared.json())["error"]["code"] == "malformed_body"
    assert gw.partner.received == []

    said = "subject: must not hold U+FFFD (the mark of characters lost in decoding)"
    csv_file = tmp_path / "lost.csv"
    csv_file.write_text(
        "subject,partner,purpose,granted_at,withdrawn_at,reference\n"
        f"{lost},acme,credit_assessment,2025-01-01,,C-1\n",
        encoding="utf-8",
    )
    args = build_parser().parse_args(["consent", "import", str(csv_file)])
    capsys.readouterr()
    assert args.handler(args, gw.runtime.settings) == 1
    assert capsys.readouterr().out == f"{csv_file}: line 2: {said}\n"
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    posted = await gw.client.post(
        "/_gateway/consent", json={"grants": [{**GRANT, "subject": lost}]}, headers=admin
    )
    assert posted.status == 422
    assert (await posted.json())["error"]["problems"] == [f"grants[0]: {said}"]
    with pytest.raises(ConsentInputError, match="U\\+FFFD"):
        registry.grant(lost, "acme", "credit_assessment", datetime(2025, 1, 1, tzinfo=UTC), "C-1")
    assert registry.show(lost) == []

    for argv in (
        ["consent", "show", lost],
        ["logs", "subject", lost],
        ["logs", "query", "--subject", lost],
    ):
        args = build_parser().parse_args(argv)
        assert args.handler(args, gw.runtime.settings) == 2, argv
        assert "U+FFFD" in capsys.readouterr().err
    for endpoint in ("/_gateway/shares", "/_gateway/consent"):
        answer = await gw.client.get(endpoint, params={"subject": lost}, headers=admin)
        assert answer.status == 400, endpoint


# --- consent --------------------------------------------------------------------------------


def consent_contract() -> dict[str, Any]:
    """A third party: every share needs its subject's consent; the subject is an ID number."""
    return contract(
        partner={"relationship": "third_party"},
        terms={"sensitive": {"allowed": ["identity.id_number"], "consent_required": True}},
        routes=subject_route("applicant.id_number")[:1],
    )


def registry_of(gw: Gateway) -> ConsentRegistry:
    registry = gw.runtime.terms.registry
    assert isinstance(registry, ConsentRegistry)
    return registry


def import_csv(gw: Gateway, tmp_path: Path, *rows: str) -> None:
    path = tmp_path / "consent.csv"
    header = "subject,partner,purpose,granted_at,withdrawn_at,reference\n"
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    args = build_parser().parse_args(["consent", "import", str(path)])
    assert args.handler(args, gw.runtime.settings) == 0


GRANT = {
    "partner": "acme",
    "purpose": "credit_assessment",
    "granted_at": "2025-01-01T00:00:00Z",
    "reference": "C-1",
}


@pytest.mark.usefixtures("hash_key_env")
async def test_a_withdrawal_in_another_spelling_ends_the_grant(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway([consent_contract()])
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    granted = await gw.client.post(
        "/_gateway/consent", json={"grants": [{**GRANT, "subject": ID_NUMBER}]}, headers=admin
    )
    assert granted.status == 200, await granted.text()
    body = {"applicant": {"id_number": ID_NUMBER, "name": "Wang"}}
    assert (await gw.share("POST", ASSESS, json=body)).status == 200
    assert len(gw.partner.received) == 1

    # The person withdraws; the platform's export writes the number in groups.
    withdrawal = "110105 1988 0605 2715,acme,credit_assessment,2025-01-01T00:00:00Z,2025-02-01,C-1"
    import_csv(gw, tmp_path, withdrawal)
    refused = await gw.share("POST", ASSESS, json=body)
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "consent_required"
    assert len(gw.partner.received) == 1  # nothing more went out after the withdrawal


@pytest.mark.usefixtures("hash_key_env")
async def test_a_grant_covers_shares_and_lookups_in_any_spelling(
    make_gateway: GatewayFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await make_gateway([consent_contract()])
    import_csv(gw, tmp_path, "11010519880605100x,acme,credit_assessment,2025-01-01,,C-7")
    capsys.readouterr()
    answer = await gw.share(
        "POST", ASSESS, json={"applicant": {"id_number": "110105-1988-0605-100X", "name": "W"}}
    )
    assert answer.status == 200, await answer.text()
    [seen] = gw.partner.received
    assert seen.headers["X-Share-Id"] == answer.headers["X-Share-Id"]
    assert gw.log.records[-1].consent_basis == ("registry:C-7",)

    # `consent show` and the admin API find the grant whichever way the id is asked for.
    args = build_parser().parse_args(
        ["consent", "show", "110105 19880605 100x", "--format", "json"]
    )
    assert args.handler(args, gw.runtime.settings) == 0
    assert [g["reference"] for g in json.loads(capsys.readouterr().out)] == ["C-7"]
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    shown = await gw.client.get(
        "/_gateway/consent", params={"subject": f" {ID_NUMBER_X}"}, headers=admin
    )
    assert [g["reference"] for g in (await shown.json())["grants"]] == ["C-7"]


@pytest.fixture(scope="session")
def consent_key() -> SigningKey:
    return rsa_key(kid="consent-ids")


async def test_a_consent_token_naming_the_subject_in_another_spelling_is_consent(
    make_gateway: GatewayFactory, tmp_path: Path, consent_key: SigningKey
) -> None:
    pem = consent_key.write_pem(tmp_path / "consent.pem")
    gw = await make_gateway(
        [consent_contract()],
        settings={"consent": {"algorithms": ["RS256"], "public_key_file": pem}},
    )
    token = mint(
        consent_key,
        issuer=None,
        audience=None,
        subject="110105 1988 0605 2715",
        partner="acme",
        purposes=["credit_assessment"],
        jti="ct-ids",
    )
    answer = await gw.share(
        "POST",
        ASSESS,
        json={"applicant": {"id_number": ID_NUMBER, "name": "Wang"}},
        headers={"X-Consent-Token": token},
    )
    assert answer.status == 200, await answer.text()
    assert len(gw.partner.received) == 1
    assert gw.log.records[-1].consent_basis == ("token:ct-ids",)


async def test_a_grant_recorded_through_the_api_in_another_spelling_is_found(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([consent_contract()])
    registry_of(gw).grant(
        f"{ID_NUMBER} ", "acme", "credit_assessment", datetime(2025, 1, 1, tzinfo=UTC), "C-9"
    )
    answer = await gw.share(
        "POST", ASSESS, json={"applicant": {"id_number": "110105/19880605/2715", "name": "W"}}
    )
    assert answer.status == 200, await answer.text()
    assert len(gw.partner.received) == 1
