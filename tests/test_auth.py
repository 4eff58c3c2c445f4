"""Tests for gateway.auth: token verification, key sources, bearer parsing, scopes, the cache."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import GatewayFactory
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpServer
from structlog.testing import capture_logs
from tokens import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    claims,
    ec_key,
    ed25519_key,
    hs256_key,
    jwks,
    mint,
    rsa_key,
    sign_raw,
    unsigned,
    write_jwks,
)

from gateway import auth as auth_module
from gateway.app import build_runtime
from gateway.auth import (
    MAX_TOKEN_CHARS,
    AuthConfigError,
    Caller,
    FileKeyStore,
    KeyFile,
    KeyStore,
    RemoteJwksKeyStore,
    StaticKeyStore,
    TokenVerifier,
    VerificationKey,
    bearer_token,
    build_auth_verifier,
    build_consent_verifier,
    build_verifier,
    grants,
    load_key_store,
    parse_jwks,
)
from gateway.errors import InvalidToken, StartupError
from gateway.pii import UNSHOWABLE
from gateway.settings import AuthSettings, ConsentSettings, KeySettings, Settings

SECRET_ENV = "TEST_GATEWAY_HS256_SECRET"

# --- keys, generated once per session -------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_signer() -> SigningKey:
    return rsa_key("rsa-1")


@pytest.fixture(scope="session")
def rsa_rotated() -> SigningKey:
    return rsa_key("rsa-2")


@pytest.fixture(scope="session")
def attacker() -> SigningKey:
    return rsa_key("attacker")


@pytest.fixture(scope="session")
def ec_signer() -> SigningKey:
    return ec_key("ec-1")


@pytest.fixture(scope="session")
def ed_signer() -> SigningKey:
    return ed25519_key("ed-1")


@pytest.fixture(scope="session")
def hs_signer() -> SigningKey:
    return hs256_key(b"k" * 40)


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys")


@pytest.fixture(scope="session")
def rsa_pem(rsa_signer: SigningKey, key_dir: Path) -> Path:
    return rsa_signer.write_pem(key_dir / "rsa.pem")


def auth_settings(**values: Any) -> AuthSettings:
    defaults: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "leeway_s": 0}
    return AuthSettings.model_validate(defaults | values)


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


class CountingKeyStore:
    """Wraps a key store and counts key selections: a cache hit selects no key."""

    def __init__(self, inner: KeyStore) -> None:
        self.inner = inner
        self.selections = 0

    @property
    def generation(self) -> int:
        return self.inner.generation

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def select(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        self.selections += 1
        return await self.inner.select(kid, alg)


@pytest.fixture
async def rs256(rsa_pem: Path) -> AsyncIterator[TokenVerifier]:
    """RS256 only, the RSA key from a PEM file, no leeway."""
    settings = auth_settings(algorithms=["RS256"], public_key_file=rsa_pem)
    async with await build_auth_verifier(settings) as verifier:
        yield verifier


async def refused(verifier: TokenVerifier, token: str, match: str) -> InvalidToken:
    with pytest.raises(InvalidToken, match=match) as caught:
        await verifier.verify(token)
    assert caught.value.status == 401
    assert caught.value.code == "invalid_token"
    return caught.value


# --- valid tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("signer_name", ["rsa_signer", "ec_signer", "ed_signer"])
async def test_valid_asymmetric_token_from_pem(
    signer_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    signer: SigningKey = request.getfixturevalue(signer_name)
    settings = auth_settings(
        algorithms=["RS256", "ES256", "EdDSA"], public_key_file=signer.write_pem(tmp_path / "k.pem")
    )
    verifier = await build_auth_verifier(settings)
    token = mint(signer, scope="share:acme:billing", jti="t-1")

    caller = await verifier.authenticate(f"Bearer {token}")

    assert caller.subject == "svc-billing"
    assert caller.scopes == frozenset({"share:acme:billing"})
    assert caller.token_id == "t-1"
    assert caller.expires_at == float(json.loads(_payload(token))["exp"])


async def test_valid_hs256_token(hs_signer: SigningKey) -> None:
    settings = auth_settings(algorithms=["HS256"], hs256_secret_env=SECRET_ENV)
    verifier = await build_auth_verifier(settings, environ={SECRET_ENV: hs_signer.secret.decode()})

    verified = await verifier.verify(mint(hs_signer, scope="a b"))

    assert verified["sub"] == "svc-billing"
    assert verified["scope"] == "a b"


async def test_hs256_secret_read_from_process_environment(
    hs_signer: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, hs_signer.secret.decode())
    settings = auth_settings(algorithms=["HS256"], hs256_secret_env=SECRET_ENV)
    verifier = await build_auth_verifier(settings)

    assert (await verifier.verify(mint(hs_signer)))["iss"] == ISSUER


async def test_hs256_wrong_secret_refused(hs_signer: SigningKey) -> None:
    settings = auth_settings(algorithms=["HS256"], hs256_secret_env=SECRET_ENV)
    verifier = await build_auth_verifier(settings, environ={SECRET_ENV: "x" * 40})

    await refused(verifier, mint(hs_signer), "signature is invalid")


async def test_signature_by_another_key_refused(rs256: TokenVerifier, attacker: SigningKey) -> None:
    await refused(rs256, mint(attacker.with_kid("rsa-1")), "signature is invalid")


async def test_tampered_payload_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    header, _, signature = mint(rsa_signer, scope="share:acme:billing").split(".")
    forged = sign_raw({}, claims(scope="share:acme:*")).split(".")[1]

    await refused(rs256, f"{header}.{forged}.{signature}", "signature is invalid")


# --- time claims ----------------------------------------------------------------------------


async def test_expired_token_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    token = mint(rsa_signer, now=time.time() - 400, ttl_s=300)

    error = await refused(rs256, token, "^token has expired$")
    assert error.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}


async def test_expired_within_leeway_accepted(rsa_signer: SigningKey, rsa_pem: Path) -> None:
    settings = auth_settings(algorithms=["RS256"], public_key_file=rsa_pem, leeway_s=30)
    verifier = await build_auth_verifier(settings)
    token = mint(rsa_signer, now=time.time() - 310, ttl_s=300)

    assert (await verifier.verify(token))["sub"] == "svc-billing"


async def test_expired_beyond_leeway_refused(rsa_signer: SigningKey, rsa_pem: Path) -> None:
    settings = auth_settings(algorithms=["RS256"], public_key_file=rsa_pem, leeway_s=30)
    verifier = await build_auth_verifier(settings)

    await refused(verifier, mint(rsa_signer, now=time.time() - 340, ttl_s=300), "expired")


@pytest.mark.parametrize(
    ("claim", "match"), [("nbf", r"not valid yet \(nbf"), ("iat", r"issued in the future \(iat")]
)
async def test_future_nbf_or_iat_refused(
    claim: str, match: str, rsa_signer: SigningKey, rsa_pem: Path
) -> None:
    settings = auth_settings(algorithms=["RS256"], public_key_file=rsa_pem, leeway_s=30)
    verifier = await build_auth_verifier(settings)
    now = time.time()

    await refused(verifier, mint(rsa_signer, claims() | {claim: int(now) + 120}), match)
    # Within the leeway, a slightly fast issuer clock is tolerated.
    assert (await verifier.verify(mint(rsa_signer, claims() | {claim: int(now) + 10})))["sub"]


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [
        # A token is good only before its exp (RFC 7519 4.1.4), its leeway included.
        ("exp", -30, False),
        ("exp", -29, True),
        # Good from its nbf on, and a fast issuer clock is trusted up to the leeway.
        ("nbf", 30, True),
        ("nbf", 31, False),
        ("iat", 30, True),
        ("iat", 31, False),
    ],
)
async def test_time_claims_at_the_edge_of_the_leeway(
    claim: str, offset: int, accepted: bool, rsa_pem: Path, rsa_signer: SigningKey
) -> None:
    clock = Clock(now=1_700_000_000.0)
    verifier, _ = cached_verifier(rsa_pem, cache_size=0, clock=clock, leeway_s=30)
    token = mint(rsa_signer, claims(now=clock.now) | {claim: int(clock.now) + offset})

    if accepted:
        assert (await verifier.verify(token))["sub"] == "svc-billing"
    else:
        await refused(verifier, token, "expired" if claim == "exp" else claim)


async def test_missing_exp_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    await refused(rs256, mint(rsa_signer, omit=["exp"]), "missing the exp claim")


@pytest.mark.parametrize("exp", ["4102444800", "soon", True, [4102444800], {"at": 1}])
async def test_non_numeric_exp_refused(
    exp: object, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    await refused(rs256, mint(rsa_signer, exp=exp), "exp must be a number")


@pytest.mark.parametrize("value", ["0", None])
@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_non_numeric_nbf_or_iat_refused(
    claim: str, value: str | None, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    await refused(rs256, mint(rsa_signer, claims() | {claim: value}), f"{claim} must be a number")


async def test_fractional_exp_accepted(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    token = mint(rsa_signer, exp=int(time.time()) + 60.5)

    assert (await rs256.authenticate(f"Bearer {token}")).expires_at % 1 == pytest.approx(0.5)


# --- issuer and audience --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "match"),
    [
        (None, "missing the iss claim"),
        ("https://idp.other.example", r"issuer \(iss\) is not accepted"),
        (ISSUER + ".evil", r"issuer \(iss\) is not accepted"),
        (ISSUER[:-3], r"issuer \(iss\) is not accepted"),
        ([ISSUER], r"issuer \(iss\) is not accepted"),
    ],
)
async def test_bad_issuer_refused(
    issuer: object, match: str, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    await refused(rs256, mint(rsa_signer, issuer=issuer), match)


@pytest.mark.parametrize(
    ("audience", "match"),
    [
        (None, "missing the aud claim"),
        ([], "missing the aud claim"),
        ("billing", r"audience \(aud\) is not accepted"),
        (AUDIENCE[:5], r"audience \(aud\) is not accepted"),
        (AUDIENCE + "-admin", r"audience \(aud\) is not accepted"),
        (["billing", AUDIENCE.upper()], r"audience \(aud\) is not accepted"),
    ],
)
async def test_bad_audience_refused(
    audience: object, match: str, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    await refused(rs256, mint(rsa_signer, audience=audience), match)


async def test_audience_list_containing_ours_accepted(
    rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    token = mint(rsa_signer, audience=["billing", AUDIENCE])

    assert (await rs256.verify(token))["aud"] == ["billing", AUDIENCE]


async def test_consent_verifier_without_issuer_or_audience_checks_neither(
    rsa_signer: SigningKey, rsa_pem: Path
) -> None:
    settings = ConsentSettings(public_key_file=rsa_pem)
    verifier = await build_consent_verifier(settings)

    assert (await verifier.verify(mint(rsa_signer, issuer=None, audience=None)))["sub"]
    assert (await verifier.verify(mint(rsa_signer, issuer="any", audience="any")))["sub"]
    await refused(verifier, mint(rsa_signer, omit=["exp"]), "missing the exp claim")


async def test_consent_verifier_with_audience_checks_it(
    rsa_signer: SigningKey, rsa_pem: Path
) -> None:
    settings = ConsentSettings(public_key_file=rsa_pem, audience="consent")
    verifier = await build_consent_verifier(settings)

    assert (await verifier.verify(mint(rsa_signer, audience="consent", issuer=None)))["sub"]
    await refused(verifier, mint(rsa_signer, audience=AUDIENCE), "audience")


# --- algorithms -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_unsigned_token_refused(alg: str, rs256: TokenVerifier) -> None:
    token = sign_raw({"typ": "JWT", "alg": alg}, claims())

    await refused(rs256, token, r"unsigned tokens \(alg none\) are not accepted")


async def test_unsigned_helper_token_refused(rs256: TokenVerifier) -> None:
    await refused(rs256, unsigned(), "unsigned")


async def test_hs256_signed_with_public_key_pem_refused(
    rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    token = sign_raw({"alg": "HS256"}, claims(), secret=rsa_signer.public_pem())

    await refused(rs256, token, "algorithm 'HS256' is not allowed")


@pytest.mark.parametrize("alg", ["13800138000", "Zhang San 110101199003074578", "rs256"])
async def test_a_header_value_that_is_no_algorithm_name_is_never_echoed(
    rs256: TokenVerifier, rsa_signer: SigningKey, alg: object
) -> None:
    # The refusal is logged (consent tokens) and answered: it repeats no caller text.
    token = sign_raw({"alg": alg}, claims(), rsa_signer)
    error = await refused(rs256, token, r"algorithm \(not a registered algorithm name\)")
    assert str(alg) not in error.message


async def test_rsa_key_never_verifies_hs256_even_if_allowed(rsa_signer: SigningKey) -> None:
    # Settings refuse HS256 beside a public key; this checks the second line of defence:
    # a key is bound to the algorithms it can do, whatever the allow-list says.
    keys = parse_jwks(jwks(rsa_signer), frozenset({"RS256", "HS256"}))
    assert keys[0].algorithms == frozenset({"RS256"})
    verifier = TokenVerifier(
        StaticKeyStore(keys, by_kid=True),
        algorithms=["RS256", "HS256"],
        issuer=ISSUER,
        audience=AUDIENCE,
    )
    token = sign_raw({"alg": "HS256", "kid": "rsa-1"}, claims(), secret=rsa_signer.public_pem())

    await refused(verifier, token, "algorithm 'HS256' does not match its key")


async def test_algorithm_outside_allow_list_refused(
    rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    await refused(
        rs256, mint(rsa_signer.with_algorithm("RS384")), "algorithm 'RS384' is not allowed"
    )


async def test_rsa_signed_token_claiming_es256_refused(
    rsa_signer: SigningKey, rsa_pem: Path
) -> None:
    settings = auth_settings(algorithms=["RS256", "ES256"], public_key_file=rsa_pem)
    verifier = await build_auth_verifier(settings)
    token = sign_raw({"alg": "ES256"}, claims(), rsa_signer, sign_as="RS256")

    await refused(verifier, token, "algorithm 'ES256' does not match its key")


async def test_ec_key_does_not_verify_rs256(ec_signer: SigningKey, tmp_path: Path) -> None:
    settings = auth_settings(
        algorithms=["RS256", "ES256"], public_key_file=ec_signer.write_pem(tmp_path / "ec.pem")
    )
    verifier = await build_auth_verifier(settings)

    await refused(verifier, mint(rsa_key().with_kid(None)), "'RS256' does not match its key")


async def test_ps256_allowed_for_rsa_key_when_configured(
    rsa_signer: SigningKey, rsa_pem: Path
) -> None:
    settings = auth_settings(algorithms=["RS256", "PS256"], public_key_file=rsa_pem)
    verifier = await build_auth_verifier(settings)

    assert (await verifier.verify(mint(rsa_signer.with_algorithm("PS256"))))["sub"]


async def test_crit_header_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    await refused(rs256, mint(rsa_signer, headers={"crit": ["exp"]}), "'crit'")
    # b64 is the one extension pyjwt understands; the gateway implements none.
    await refused(rs256, mint(rsa_signer, headers={"crit": ["b64"], "b64": True}), "'crit'")


async def test_missing_alg_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    token = sign_raw({"typ": "JWT"}, claims(), rsa_signer, sign_as="RS256")

    await refused(rs256, token, r"no algorithm \(alg\)")


async def test_non_string_kid_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    await refused(rs256, mint(rsa_signer, headers={"kid": 7}), r"kid\) must be a string")


# --- malformed tokens -----------------------------------------------------------------------


async def test_oversized_token_refused(rs256: TokenVerifier, rsa_signer: SigningKey) -> None:
    token = mint(rsa_signer, padding="x" * MAX_TOKEN_CHARS)

    await refused(rs256, token, "larger than 8192 bytes")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "....",
        "e30.e30.e30.e30.e30",
        "!!!.e30.",
        "bnVsbA.e30.",
        "W10.e30.",
        "eyJhbGciOiJSUzI1NiJ9.%%%.AAAA",
        "eyJhbGciOiJSUzI1NiJ9.e30.%%%",
        "eyJhbGciOiJSUzI1NiJ9.WzFd.AAAA",
        "ëyJ.e30.e30",
    ],
)
async def test_garbage_token_refused(token: str, rs256: TokenVerifier) -> None:
    await refused(rs256, token, "malformed|signature is invalid")


def _with_member(document: bytes, member: bytes) -> bytes:
    return document[:-1] + b", " + member + b"}"


def _first_member_again(document: bytes) -> bytes:
    name, value = next(iter(json.loads(document).items()))
    return _with_member(document, json.dumps({name: value}).encode()[1:-1])


# Ways to spoil a header or claim set that pyjwt's parser reads all the same.
NOT_STRICT_JSON: dict[str, Callable[[bytes], bytes]] = {
    "duplicate_name": _first_member_again,
    "byte_order_mark": lambda document: b"\xef\xbb\xbf" + document,
    "utf_16": lambda document: document.decode().encode("utf-16-le"),
    "utf_32_with_bom": lambda document: document.decode().encode("utf-32"),
    "lone_surrogate": lambda document: _with_member(document, b'"note": "a\\ud800"'),
    "nan": lambda document: _with_member(document, b'"note": NaN'),
    "infinity": lambda document: _with_member(document, b'"note": -Infinity'),
    "nested_too_deep": lambda document: _with_member(document, b'"note": ' + b"[" * 40 + b"]" * 40),
    # Numbers no float holds: an `exp` of them would overflow where it is compared.
    "number_beyond_a_float": lambda document: _with_member(document, b'"note": 1e400'),
    "integer_beyond_a_float": lambda document: _with_member(document, b'"note": ' + b"9" * 400),
}


@pytest.mark.parametrize("part", [0, 1], ids=["header", "claim_set"])
@pytest.mark.parametrize("spoil", NOT_STRICT_JSON.values(), ids=NOT_STRICT_JSON.keys())
async def test_a_signed_token_whose_json_is_not_strict_is_refused(
    rs256: TokenVerifier, rsa_signer: SigningKey, part: int, spoil: Callable[[bytes], bytes]
) -> None:
    # Signed by the trusted key: only the reading of the JSON can refuse it.
    parts = [json.dumps({"typ": "JWT", "alg": "RS256"}).encode(), json.dumps(claims()).encode()]
    assert (await rs256.verify(sign_raw(parts[0], parts[1], rsa_signer)))["sub"]
    parts[part] = spoil(parts[part])

    await refused(rs256, sign_raw(parts[0], parts[1], rsa_signer), "not one strict JSON object")
    assert rs256.cached_tokens == 1


def respell(segment: str) -> str:
    """The same bytes with the last character's unused bits set (pyjwt decodes both alike)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3), "a segment with unused bits"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]


@pytest.mark.parametrize(
    "spell",
    [
        lambda h, p, s: f"{h}.{p}.{s}==",
        lambda h, p, s: f"{h}.{p}=.{s}",
        lambda h, p, s: f"{h}=.{p}.{s}",
        lambda h, p, s: f"{h}.{p}.{respell(s)}",
    ],
    ids=["padded_signature", "padded_payload", "padded_header", "unused_bits"],
)
async def test_another_spelling_of_a_valid_token_is_refused(
    rs256: TokenVerifier, rsa_signer: SigningKey, spell: Callable[[str, str, str], str]
) -> None:
    # Each spelling would be verified in full and cached under an entry of its own.
    token = mint(rsa_signer)
    header, payload, signature = token.split(".")
    assert len(signature) % 4 in (2, 3)  # a 2048-bit signature is 342 characters
    assert (await rs256.verify(token))["sub"]
    await refused(rs256, spell(header, payload, signature), "not unpadded base64url")
    assert rs256.cached_tokens == 1


# --- key sources ----------------------------------------------------------------------------


async def test_jwks_file_selects_key_by_kid(
    rsa_signer: SigningKey, ec_signer: SigningKey, tmp_path: Path
) -> None:
    path = write_jwks(tmp_path / "jwks.json", rsa_signer, ec_signer)
    verifier = await build_auth_verifier(
        auth_settings(algorithms=["RS256", "ES256"], jwks_file=path)
    )

    assert (await verifier.verify(mint(rsa_signer)))["sub"]
    assert (await verifier.verify(mint(ec_signer)))["sub"]
    await refused(
        verifier, mint(rsa_signer.with_kid("rsa-9")), r"key id \(kid\) is not a trusted key"
    )
    await refused(verifier, mint(rsa_signer.with_kid(None)), r"no key id \(kid\) and several keys")
    await refused(verifier, mint(rsa_signer.with_kid("ec-1")), "'RS256' does not match its key")


async def test_jwks_keys_sharing_a_kid_are_each_tried(
    rsa_signer: SigningKey, attacker: SigningKey, tmp_path: Path
) -> None:
    # A provider rotating a key under its old kid publishes both for a while.
    rotated = rsa_key(rsa_signer.kid)
    path = write_jwks(tmp_path / "jwks.json", rsa_signer, rotated)
    verifier = await build_auth_verifier(auth_settings(algorithms=["RS256"], jwks_file=path))

    assert (await verifier.verify(mint(rsa_signer, subject="old")))["sub"] == "old"
    assert (await verifier.verify(mint(rotated, subject="new")))["sub"] == "new"
    await refused(verifier, mint(attacker.with_kid(rsa_signer.kid)), "signature is invalid")
    # Past the first key's wrong signature, the second key's verdict is the claims'.
    await refused(verifier, mint(rotated, ttl_s=-3600), "expired")


async def test_jwks_file_with_one_key_accepts_token_without_kid(
    rsa_signer: SigningKey, tmp_path: Path
) -> None:
    path = write_jwks(tmp_path / "jwks.json", rsa_signer)
    verifier = await build_auth_verifier(auth_settings(algorithms=["RS256"], jwks_file=path))

    assert (await verifier.verify(mint(rsa_signer.with_kid(None))))["sub"]
    await refused(verifier, mint(rsa_signer.with_kid("other")), "not a trusted key")


async def test_jwks_skips_unusable_keys(rsa_signer: SigningKey, ec_signer: SigningKey) -> None:
    document = {
        "keys": [
            rsa_signer.public_jwk(use="enc"),
            rsa_signer.public_jwk(kid="ops", key_ops=["encrypt"]),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            ec_signer.public_jwk(),  # ES256 is not configured
            rsa_key("small", bits=1024).public_jwk(),
            rsa_signer.public_jwk(kid="ps", alg="PS256"),  # alg pins it to PS256, not configured
            {"kty": "RSA", "kid": "broken"},
            "not a key",
            rsa_signer.public_jwk(kid="good"),
        ]
    }

    keys = parse_jwks(document, frozenset({"RS256"}))

    assert [(key.kid, key.algorithms) for key in keys] == [("good", frozenset({"RS256"}))]


def test_a_key_pinned_to_another_algorithm_is_skipped_naming_the_configured_ones(
    rsa_signer: SigningKey,
) -> None:
    document = {"keys": [rsa_signer.public_jwk(kid="ps", alg="PS256")]}
    with pytest.raises(
        ValueError, match=r"its alg 'PS256' is none of the configured algorithms \(RS256, RS384\)"
    ):
        parse_jwks(document, frozenset({"RS256", "RS384"}))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{", "jwks_file"),
        (b"[]", "not a JWKS document"),
        (b'{"keys": []}', "no usable signature key"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "symmetric keys"),
    ],
)
def test_bad_jwks_file_is_a_config_error(content: bytes, match: str, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(content)

    with pytest.raises(AuthConfigError, match=match):
        load_key_store(KeySettings(algorithms=["RS256"], jwks_file=path))


async def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(AuthConfigError, match=r"auth\.public_key_file: cannot read .*missing\.pem"):
        await build_auth_verifier(auth_settings(public_key_file=missing))
    with pytest.raises(AuthConfigError, match=r"consent\.jwks_file: cannot read"):
        await build_consent_verifier(ConsentSettings(jwks_file=tmp_path))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda signer: b"not a key", "is not a PEM public key"),
        (lambda signer: signer.public_pem()[:-40], "is not a PEM public key"),
        (lambda signer: b"-----BEGIN PRIVATE KEY-----\n...", "holds a private key"),
        (lambda signer: b"-----BEGIN CERTIFICATE-----\n...", "holds a certificate"),
        (lambda signer: rsa_key(bits=1024).public_pem(), "1024 bits is below 2048"),
        (lambda signer: ec_key().public_pem(), "none of the configured algorithms"),
    ],
)
async def test_invalid_pem_is_a_config_error(
    make: Callable[[SigningKey], bytes], match: str, rsa_signer: SigningKey, tmp_path: Path
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(make(rsa_signer))

    with pytest.raises(AuthConfigError, match=match):
        await build_auth_verifier(auth_settings(algorithms=["RS256"], public_key_file=path))


def write_key_file(path: Path, source: str, key: SigningKey) -> Path:
    """`key` written at `path` as the setting `source` reads it: a JWKS or a PEM file."""
    return write_jwks(path, key) if source == "jwks_file" else key.write_pem(path)


@pytest.mark.parametrize("source", ["public_key_file", "jwks_file"])
async def test_a_key_file_over_the_cap_is_refused_unread_past_it(
    source: str, rsa_signer: SigningKey, tmp_path: Path
) -> None:
    # A good key, then padding the parser would skip: refused for its size, not its content.
    path = write_key_file(tmp_path / "keys", source, rsa_signer)
    with path.open("ab") as file:
        file.write(b"\n" * auth_module.KEY_FILE_MAX_BYTES)
    settings = auth_settings(algorithms=["RS256"], **{source: path})

    with pytest.raises(AuthConfigError, match=rf"auth\.{source}: .* is larger than 262144 bytes"):
        await build_auth_verifier(settings)


@pytest.mark.timeout(20)
async def test_a_key_file_that_never_ends_is_refused_not_read_forever() -> None:
    settings = auth_settings(algorithms=["RS256"], public_key_file=Path("/dev/zero"))
    with pytest.raises(AuthConfigError, match="is larger than 262144 bytes"):
        await build_auth_verifier(settings)


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({}, "TEST_GATEWAY_HS256_SECRET is not set or empty"),
        ({SECRET_ENV: ""}, "is not set or empty"),
        ({SECRET_ENV: "s" * 31}, "is 31 bytes; HS256 needs at least 32"),
        # pyjwt would refuse every token signed with these: a key pasted in the secret's place.
        ({SECRET_ENV: "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"}, "reads as a key, not a secret"),
        ({SECRET_ENV: '{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}'}, "reads as a key"),
    ],
)
async def test_missing_or_short_hs256_secret_is_a_config_error(
    environ: dict[str, str], match: str
) -> None:
    settings = auth_settings(algorithms=["HS256"], hs256_secret_env=SECRET_ENV)

    with pytest.raises(AuthConfigError, match=match):
        await build_auth_verifier(settings, environ=environ)


@pytest.mark.parametrize(
    ("section", "keys"),
    [
        ("auth", {"public_key_file": None}),  # in place of make_gateway's own key
        ("consent", {"issuer": "https://consent.example"}),
    ],
)
async def test_a_key_source_unusable_at_the_start_stops_it_in_one_line(
    make_gateway: GatewayFactory, section: str, keys: dict[str, object]
) -> None:
    secret = {"algorithms": ["HS256"], "hs256_secret_env": SECRET_ENV}  # not set
    with pytest.raises(StartupError) as refused:
        await make_gateway(settings={section: {**keys, **secret}})
    assert refused.value.problems == [
        f"{section}.hs256_secret_env: environment variable {SECRET_ENV} is not set or empty"
    ]


async def test_a_gateway_without_caller_authentication_does_not_start() -> None:
    with pytest.raises(StartupError) as refused:
        await build_runtime(Settings(), environ={"SHARE_GATEWAY_HASH_KEY": "k" * 32})
    assert refused.value.problems == ["settings: auth: caller authentication must be configured"]


async def test_empty_issuer_is_a_config_error(rsa_pem: Path) -> None:
    with pytest.raises(AuthConfigError, match="must not be empty"):
        await build_verifier(
            KeySettings(public_key_file=rsa_pem), issuer="", audience=AUDIENCE, cache_size=0
        )


@pytest.mark.parametrize(
    "url",
    ["http://idp.example/jwks.json", "ftp://127.0.0.1/jwks.json", "https:///jwks.json", "jwks"],
)
async def test_jwks_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(AuthConfigError, match=r"auth\.jwks_url: "):
        await build_auth_verifier(auth_settings(jwks_url=url))


@pytest.mark.parametrize("url", ["https://idp..example/jwks", f"https://{'a' * 64}.example/jwks"])
async def test_jwks_url_host_a_resolver_cannot_encode_is_a_config_error(url: str) -> None:
    # Else found at the first fetch, when the gateway starts: as a traceback.
    with pytest.raises(AuthConfigError, match="empty label or one over 63"):
        await build_auth_verifier(auth_settings(jwks_url=url))


@pytest.mark.parametrize(
    "url", ["https://svc:s3cret@idp.example/jwks", "https://svc@idp.example/jwks"]
)
async def test_jwks_url_may_not_hold_credentials(url: str) -> None:
    with pytest.raises(AuthConfigError, match="must not hold a user name or password") as caught:
        await build_auth_verifier(auth_settings(jwks_url=url))
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["https://idp.example/jwks", "http://127.0.0.1:1/j", "http://[::1]/j"]
)
async def test_jwks_url_accepted_without_fetching_before_start(url: str) -> None:
    assert isinstance(await build_auth_verifier(auth_settings(jwks_url=url)), TokenVerifier)


# --- key files read again (a reload) -------------------------------------------------------


def file_store(verifier: TokenVerifier) -> FileKeyStore:
    store = verifier.key_store
    assert isinstance(store, FileKeyStore)
    return store


async def test_a_key_taken_out_of_a_pem_file_stops_verifying_cached_tokens_too(
    rsa_signer: SigningKey, rsa_rotated: SigningKey, tmp_path: Path
) -> None:
    path = rsa_signer.write_pem(tmp_path / "key.pem")
    verifier = await build_auth_verifier(
        auth_settings(algorithms=["RS256"], public_key_file=path, token_cache_size=10)
    )
    old = mint(rsa_signer)
    assert (await verifier.verify(old))["sub"]
    assert verifier.cached_tokens == 1

    rsa_rotated.write_pem(path)
    store = file_store(verifier)
    store.use(store.read())

    await refused(verifier, old, "signature is invalid")
    assert (await verifier.verify(mint(rsa_rotated)))["sub"]


async def test_a_key_taken_out_of_a_jwks_file_stops_verifying_and_a_key_added_verifies(
    rsa_signer: SigningKey, rsa_rotated: SigningKey, ec_signer: SigningKey, tmp_path: Path
) -> None:
    path = write_jwks(tmp_path / "jwks.json", rsa_signer, ec_signer)
    verifier = await build_auth_verifier(
        auth_settings(algorithms=["RS256", "ES256"], jwks_file=path, token_cache_size=10)
    )
    withdrawn, kept = mint(rsa_signer), mint(ec_signer)
    assert (await verifier.verify(withdrawn))["sub"]
    assert (await verifier.verify(kept))["sub"]

    write_jwks(path, ec_signer, rsa_rotated)
    store = file_store(verifier)
    store.use(store.read())

    await refused(verifier, withdrawn, r"key id \(kid\) is not a trusted key")
    assert (await verifier.verify(kept))["sub"]
    assert (await verifier.verify(mint(rsa_rotated)))["sub"]


def read_within(store: FileKeyStore, fifo: Path) -> KeyFile | Exception:
    """What `store.read()` gives (or raises) within 5 s; a read left waiting on `fifo` for a
    writer is let go (an empty write) so that the test fails rather than hangs."""
    answer: list[KeyFile | Exception] = []

    def read() -> None:
        try:
            answer.append(store.read())
        except Exception as exc:  # handed to the test, which says what it was
            answer.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    waited = reader.is_alive()
    if waited:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    assert not waited, "the reload waited for a writer to the key file"
    return answer[0]


def key_fifo(path: Path, content: bytes) -> threading.Thread:
    """A FIFO at `path` that gives `content` to its first reader, as `<(cat key.pem)` would."""
    os.mkfifo(path)

    def write() -> None:
        with path.open("wb") as pipe:
            pipe.write(content)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_a_key_file_given_as_a_pipe_keeps_its_keys_at_a_reload(
    rsa_signer: SigningKey, tmp_path: Path
) -> None:
    fifo = tmp_path / "key.pem"
    key_fifo(fifo, rsa_signer.public_pem())  # read once, by the start
    store = load_key_store(KeySettings(algorithms=["RS256"], public_key_file=fifo))
    assert isinstance(store, FileKeyStore)
    generation = store.generation

    loaded = read_within(store, fifo)

    assert isinstance(loaded, KeyFile)
    assert loaded.document == rsa_signer.public_pem()
    store.use(loaded)
    assert store.generation == generation  # the tokens it verified stay remembered


def test_a_key_file_replaced_by_a_pipe_refuses_the_reload_without_waiting_on_it(
    rsa_signer: SigningKey, tmp_path: Path
) -> None:
    path = rsa_signer.write_pem(tmp_path / "key.pem")
    store = load_key_store(KeySettings(algorithms=["RS256"], public_key_file=path))
    assert isinstance(store, FileKeyStore)
    path.unlink()
    os.mkfifo(path)  # and nothing writes to it

    refused = read_within(store, path)

    assert isinstance(refused, AuthConfigError)
    assert "is no longer a regular file" in str(refused)


async def test_a_key_file_read_again_unchanged_keeps_the_verified_tokens(
    rsa_signer: SigningKey, tmp_path: Path
) -> None:
    path = write_jwks(tmp_path / "jwks.json", rsa_signer)
    store = load_key_store(KeySettings(algorithms=["RS256"], jwks_file=path))
    assert isinstance(store, FileKeyStore)
    counting = CountingKeyStore(store)
    verifier = TokenVerifier(
        counting, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE, cache_size=10
    )
    token = mint(rsa_signer)
    await verifier.verify(token)

    store.use(store.read())
    await verifier.verify(token)

    assert counting.selections == 1


@pytest.mark.parametrize(
    ("source", "content", "match"),
    [
        ("public_key_file", None, r"auth\.public_key_file: cannot read"),
        ("public_key_file", b"not a key", "is not a PEM public key"),
        ("public_key_file", b"-----BEGIN PRIVATE KEY-----\n...", "holds a private key"),
        ("public_key_file", "ec", "none of the configured algorithms"),
        ("public_key_file", "half", "is not a PEM public key"),
        ("jwks_file", None, r"auth\.jwks_file: cannot read"),
        ("jwks_file", b'{"keys": [', "jwks_file"),
        # As at start: a file left with no usable key is refused, not read as every key withdrawn.
        ("jwks_file", b'{"keys": []}', "no usable signature key"),
        ("jwks_file", "ec", "no usable signature key"),
        ("public_key_file", b"\n" * (256 * 1024 + 1), "is larger than 262144 bytes"),
    ],
)
async def test_a_key_file_that_cannot_be_used_at_a_reload_leaves_the_keys_in_use(
    source: str,
    content: bytes | str | None,
    match: str,
    rsa_signer: SigningKey,
    ec_signer: SigningKey,
    tmp_path: Path,
) -> None:
    path = write_key_file(tmp_path / "keys", source, rsa_signer)
    settings = auth_settings(algorithms=["RS256"], token_cache_size=10, **{source: path})
    verifier = await build_auth_verifier(settings)
    cached = mint(rsa_signer, subject="cached")
    assert (await verifier.verify(cached))["sub"] == "cached"

    if content is None:
        path.unlink()
    elif content == "ec":  # a key of an algorithm the settings do not allow
        write_key_file(path, source, ec_signer)
    elif content == "half":  # caught while it was being written
        path.write_bytes(rsa_key().public_pem()[:200])
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    store = file_store(verifier)
    with pytest.raises(AuthConfigError, match=match):
        store.read()

    assert (await verifier.verify(cached))["sub"] == "cached"
    assert verifier.cached_tokens == 1
    assert (await verifier.verify(mint(rsa_signer, subject="fresh")))["sub"] == "fresh"


def test_a_key_file_rewritten_while_it_is_read_is_read_again_whole(
    rsa_signer: SigningKey, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = rsa_signer.write_pem(tmp_path / "key.pem")
    store = load_key_store(KeySettings(algorithms=["RS256"], public_key_file=path))
    assert isinstance(store, FileKeyStore)
    # Another size, so that the change shows whatever the file system's clock resolution.
    rewritten = rsa_key(bits=3072)
    looks = 0

    def stat_after_a_rewrite(name: Path) -> os.stat_result:
        nonlocal looks
        looks += 1
        if looks == 1:  # the writer got in between the read and the look after it
            rewritten.write_pem(path)
        return os.stat(name)

    monkeypatch.setattr(
        auth_module, "os", SimpleNamespace(fstat=os.fstat, stat=stat_after_a_rewrite)
    )
    loaded = store.read()

    assert looks == 2
    assert loaded.document == rewritten.public_pem()


# --- jwks_url -------------------------------------------------------------------------------


@dataclass
class JwksServer:
    """A loopback identity provider that serves `document` and records each request path."""

    document: Any
    requests: list[str] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0
    chunked: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status in (301, 302, 307):
            raise web.HTTPFound("/redirected")
        body = (
            self.document
            if isinstance(self.document, bytes)
            else json.dumps(self.document).encode()
        )
        if self.chunked:
            # No Content-Length: the size cap must hold while reading.
            response = web.StreamResponse(status=self.status)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(body), 512):
                await response.write(body[start : start + 512])
            await response.write_eof()
            return response
        return web.Response(status=self.status, body=body, content_type="application/json")


ServeJwks = Callable[[JwksServer], Awaitable[str]]


@pytest.fixture
def serve_jwks(aiohttp_server: AiohttpServer) -> ServeJwks:
    async def serve(jwks_server: JwksServer) -> str:
        server: TestServer = await aiohttp_server(jwks_server.app())
        return str(server.make_url("/.well-known/jwks.json"))

    return serve


async def test_jwks_url_rotation_refetches_once_per_interval(
    serve_jwks: ServeJwks,
    rsa_signer: SigningKey,
    rsa_rotated: SigningKey,
    attacker: SigningKey,
) -> None:
    idp = JwksServer(jwks(rsa_signer))
    clock = Clock(now=1000.0)
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, clock=clock
    )
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        assert len(idp.requests) == 1
        assert (await v.verify(mint(rsa_signer)))["sub"]
        assert len(idp.requests) == 1

        idp.document = jwks(rsa_signer, rsa_rotated)
        assert (await v.verify(mint(rsa_rotated)))["sub"]
        assert len(idp.requests) == 2

        clock.now += 59
        await refused(v, mint(attacker.with_kid("unknown-1")), "not a trusted key")
        await refused(v, mint(attacker.with_kid("unknown-2")), "not a trusted key")
        assert len(idp.requests) == 2

        clock.now += 1
        await refused(v, mint(attacker.with_kid("unknown-3")), "not a trusted key")
        assert len(idp.requests) == 3
        # Known keys are still served from memory.
        assert (await v.verify(mint(rsa_rotated, jti="again")))["sub"]
        assert len(idp.requests) == 3


async def test_a_cached_token_is_refused_once_its_key_left_the_jwks(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_rotated: SigningKey, attacker: SigningKey
) -> None:
    idp = JwksServer(jwks(rsa_signer, rsa_rotated))
    clock = Clock(now=1000.0)
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, clock=clock
    )
    async with TokenVerifier(
        store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE, cache_size=16
    ) as v:
        withdrawn, kept = mint(rsa_signer), mint(rsa_rotated)
        assert (await v.authenticate(f"Bearer {withdrawn}")).subject
        assert (await v.authenticate(f"Bearer {kept}")).subject
        idp.document = jwks(rsa_rotated)  # the provider withdraws the first key
        clock.now += 60
        await refused(v, mint(attacker.with_kid("unknown")), "not a trusted key")  # a refresh
        assert len(idp.requests) == 2
        with pytest.raises(InvalidToken, match="not a trusted key"):
            await v.authenticate(f"Bearer {withdrawn}")
        assert (await v.authenticate(f"Bearer {kept}")).subject


@pytest.mark.parametrize("other_algorithm", [False, True], ids=["no_key", "an_es256_key"])
async def test_a_jwks_left_with_no_usable_key_withdraws_every_key(
    serve_jwks: ServeJwks,
    rsa_signer: SigningKey,
    ec_signer: SigningKey,
    attacker: SigningKey,
    other_algorithm: bool,
) -> None:
    # The provider's current set, although this gateway (RS256 only) can use none of it: the
    # keys it withdrew must stop verifying, cached tokens and new ones alike.
    idp = JwksServer(jwks(rsa_signer))
    clock = Clock(now=1000.0)
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, clock=clock
    )
    async with TokenVerifier(
        store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE, cache_size=16
    ) as v:
        cached = mint(rsa_signer)
        assert (await v.authenticate(f"Bearer {cached}")).subject
        idp.document = jwks(ec_signer) if other_algorithm else {"keys": []}
        clock.now += 60
        await refused(v, mint(attacker.with_kid("unknown")), "not a trusted key")  # a refresh
        assert len(idp.requests) == 2
        with pytest.raises(InvalidToken, match="not a trusted key"):
            await v.authenticate(f"Bearer {cached}")
        await refused(v, mint(rsa_signer, jti="fresh"), "not a trusted key")
        await refused(v, mint(rsa_signer.with_kid(None)), "not a trusted key")
        # The provider publishes a usable key again: it counts at the next refresh.
        idp.document = jwks(rsa_signer)
        clock.now += 60
        assert (await v.verify(mint(rsa_signer, jti="later")))["sub"]


async def test_a_jwks_that_does_not_parse_keeps_the_keys_held(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, attacker: SigningKey
) -> None:
    # Not the provider's word on its keys, only a failed fetch: nothing is withdrawn.
    idp = JwksServer(jwks(rsa_signer))
    clock = Clock(now=1000.0)
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, clock=clock
    )
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        idp.document = {"not": "a key set"}
        clock.now += 60
        await refused(v, mint(attacker.with_kid("unknown")), "not a trusted key")  # a refresh
        assert len(idp.requests) == 2
        assert (await v.verify(mint(rsa_signer)))["sub"]


async def test_a_key_the_provider_withdraws_is_dropped_without_any_new_kid(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_rotated: SigningKey
) -> None:
    # Nobody sends an unknown kid: the keys are fetched again once they are `max_age_s` old.
    idp = JwksServer(jwks(rsa_signer, rsa_rotated))
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, max_age_s=0.2
    )
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        assert (await v.verify(mint(rsa_signer)))["sub"]
        idp.document = jwks(rsa_rotated)  # withdrawn: compromised, say
        for _ in range(50):  # at most 5 s
            if len(idp.requests) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.05)  # the refreshed keys are in place
        await refused(v, mint(rsa_signer, jti="after"), "not a trusted key")
        assert (await v.verify(mint(rsa_rotated)))["sub"]


async def test_an_unchanged_jwks_keeps_the_verified_tokens(
    serve_jwks: ServeJwks, rsa_signer: SigningKey
) -> None:
    # A refresh that brings the same document back withdraws nothing: no cache to clear (an
    # invented kid a minute would otherwise empty it for everyone).
    idp = JwksServer(jwks(rsa_signer))
    clock = Clock(now=1000.0)
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, clock=clock
    )
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        before = store.generation
        clock.now += 60
        await refused(v, mint(rsa_signer.with_kid("invented")), "not a trusted key")
        assert len(idp.requests) == 2
        assert store.generation == before


@pytest.mark.parametrize("odd", [{"alg": "none"}, {"alg": ["RS256"]}], ids=["alg_none", "alg_list"])
async def test_one_odd_key_in_the_jwks_is_skipped_not_fatal(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_rotated: SigningKey, odd: dict[str, Any]
) -> None:
    [odd_key] = jwks(rsa_rotated.with_kid("odd"))["keys"]
    idp = JwksServer({"keys": [*jwks(rsa_signer)["keys"], {**odd_key, **odd}]})
    store = RemoteJwksKeyStore(await serve_jwks(idp), ["RS256"], refresh_min_interval_s=0)
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        assert (await v.verify(mint(rsa_signer)))["sub"]
        await refused(v, mint(rsa_rotated.with_kid("odd")), "not a trusted key")


def test_a_skipped_key_is_never_quoted(rsa_signer: SigningKey) -> None:
    # pyjwt's message for a key it cannot map quotes the whole key, private parts included.
    key = ec.generate_private_key(ec.SECP256R1())
    private = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    odd = {**private, "alg": "ECDH-ES", "kid": "enc"}
    with pytest.raises(ValueError, match="no usable signature key") as caught:
        parse_jwks({"keys": [odd]}, frozenset({"ES256"}))
    assert private["d"][:8] not in str(caught.value)


async def test_jwks_url_concurrent_unknown_kids_share_one_fetch(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_rotated: SigningKey
) -> None:
    idp = JwksServer(jwks(rsa_signer))
    store = RemoteJwksKeyStore(await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60)
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        idp.document = jwks(rsa_signer, rsa_rotated)
        tokens = [mint(rsa_rotated, jti=str(n)) for n in range(5)]

        results = await asyncio.gather(*(v.verify(token) for token in tokens))

        assert [result["jti"] for result in results] == ["0", "1", "2", "3", "4"]
        assert len(idp.requests) == 2


async def test_the_jwks_url_is_logged_and_reported_without_its_query(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_rotated: SigningKey
) -> None:
    idp = JwksServer(jwks(rsa_signer))
    url = await serve_jwks(idp) + "?key=s3cret"
    store = RemoteJwksKeyStore(url, ["RS256"], refresh_min_interval_s=0)
    with capture_logs() as events:
        async with TokenVerifier(
            store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE
        ) as v:
            idp.document = jwks(rsa_signer, rsa_rotated)
            assert (await v.verify(mint(rsa_rotated)))["sub"]
            idp.status = 503
            await refused(v, mint(rsa_rotated.with_kid("gone")), "not a trusted key")
    assert [e["event"] for e in events] == ["jwks_refreshed", "jwks_refresh_failed"]
    assert all(e["url"] == url.split("?")[0] for e in events)
    idp.status = 503
    failing = RemoteJwksKeyStore(url, ["RS256"], refresh_min_interval_s=0)
    with pytest.raises(AuthConfigError, match="cannot load the JWKS") as caught:
        await failing.start()
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("secret", ["s3cr%2fet", "s3cr'et", "s3cr%27et"])
async def test_the_jwks_query_never_appears_in_an_error_that_quotes_the_url(secret: str) -> None:
    # aiohttp's message quotes the URL as it normalised it (`%2f` read as `/`).
    async def unreadable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(unreadable, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RemoteJwksKeyStore(
        f"http://127.0.0.1:{port}/jwks?access_key={secret}", ["RS256"], refresh_min_interval_s=60
    )
    try:
        with pytest.raises(AuthConfigError, match="cannot load the JWKS") as caught:
            await store.start()
        assert "s3cr" not in str(caught.value)
        assert "et" not in str(caught.value).partition("/jwks")[2]
    finally:
        server.close()
        await server.wait_closed()


async def test_jwks_url_failed_refresh_keeps_known_keys(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_rotated: SigningKey
) -> None:
    idp = JwksServer(jwks(rsa_signer))
    store = RemoteJwksKeyStore(await serve_jwks(idp), ["RS256"], refresh_min_interval_s=0)
    async with TokenVerifier(store, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE) as v:
        idp.status = 503
        await refused(v, mint(rsa_rotated), "not a trusted key")
        assert len(idp.requests) == 2
        assert (await v.verify(mint(rsa_signer)))["sub"]


async def test_jwks_url_built_from_settings(serve_jwks: ServeJwks, rsa_signer: SigningKey) -> None:
    idp = JwksServer(jwks(rsa_signer))
    settings = auth_settings(algorithms=["RS256"], jwks_url=await serve_jwks(idp))
    verifier = await build_auth_verifier(settings)
    assert idp.requests == []

    await verifier.start()
    try:
        assert (await verifier.verify(mint(rsa_signer)))["sub"]
    finally:
        await verifier.close()
    assert idp.requests == ["/.well-known/jwks.json"]


async def test_jwks_url_verify_before_start_is_a_programming_error(
    rsa_signer: SigningKey,
) -> None:
    verifier = await build_auth_verifier(auth_settings(jwks_url="https://idp.example/jwks"))

    with pytest.raises(RuntimeError, match="before start"):
        await verifier.verify(mint(rsa_signer))


@pytest.mark.parametrize(
    ("idp", "match"),
    [
        (JwksServer({}, status=500), "HTTP status 500"),
        (JwksServer({}, status=302), "HTTP status 302"),
        (JwksServer(b"<html>"), "Expecting value"),
        (JwksServer({"keys": []}), "no usable signature key"),
        (JwksServer(b'{"keys": [' + b" " * 2048 + b"]}"), "larger than 1024 bytes"),
        (JwksServer(b'{"keys": [' + b" " * 2048 + b"]}", chunked=True), "larger than 1024 bytes"),
        (JwksServer({}, delay_s=1), "TimeoutError"),
    ],
)
async def test_jwks_url_failed_start_is_a_config_error(
    idp: JwksServer, match: str, serve_jwks: ServeJwks
) -> None:
    store = RemoteJwksKeyStore(
        await serve_jwks(idp), ["RS256"], refresh_min_interval_s=60, max_bytes=1024, timeout_s=0.1
    )

    with pytest.raises(AuthConfigError, match=f"cannot load the JWKS from .*: .*{match}"):
        await store.start()
    assert "/redirected" not in idp.requests


async def test_unconnectable_jwks_url_is_a_config_error(unused_tcp_port: int) -> None:
    store = RemoteJwksKeyStore(
        f"http://127.0.0.1:{unused_tcp_port}/jwks", ["RS256"], refresh_min_interval_s=60
    )

    with pytest.raises(AuthConfigError, match="cannot load the JWKS"):
        await store.start()


async def test_key_location_headers_are_never_fetched(
    serve_jwks: ServeJwks, rsa_signer: SigningKey, rsa_pem: Path, attacker: SigningKey
) -> None:
    evil = JwksServer(jwks(attacker))
    evil_url = await serve_jwks(evil)
    idp = JwksServer(jwks(rsa_signer))
    headers = {
        "jku": evil_url,
        "x5u": evil_url.replace("jwks.json", "cert.pem"),
        "x5c": ["MIIBszCCAVmgAwIBAgIUQ"],
        "jwk": attacker.public_jwk(),
    }
    token = mint(attacker, headers=headers)
    pem_verifier = await build_auth_verifier(
        auth_settings(algorithms=["RS256"], public_key_file=rsa_pem)
    )
    url_settings = auth_settings(algorithms=["RS256"], jwks_url=await serve_jwks(idp))

    await refused(pem_verifier, token, "signature is invalid")
    async with await build_auth_verifier(url_settings) as url_verifier:
        await refused(url_verifier, token, "not a trusted key")
        await refused(url_verifier, mint(attacker.with_kid("rsa-1"), headers=headers), "signature")

    assert evil.requests == []
    assert len(idp.requests) == 2


# --- Authorization header -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        ("   ", "missing Authorization header"),
        ("Basic dXNlcjpwYXNz", "scheme must be Bearer"),
        ("Token abc", "scheme must be Bearer"),
        ("Bearertoken", "scheme must be Bearer"),
        ("Bearer", "must be 'Bearer <token>'"),
        ("Bearer ", "must be 'Bearer <token>'"),
        ("Bearer a.b.c d.e.f", "must be 'Bearer <token>'"),
        ("Bearer  a.b.c", "must be 'Bearer <token>'"),
        ("Bearer a.b.c ", "must be 'Bearer <token>'"),
    ],
)
def test_bad_authorization_header_refused(header: str | None, match: str) -> None:
    with pytest.raises(InvalidToken, match=match):
        bearer_token(header)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(
    scheme: str, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    caller = await rs256.authenticate(f"{scheme} {mint(rsa_signer)}")

    assert caller.subject == "svc-billing"


async def test_authenticate_refuses_bad_header_before_verifying(rs256: TokenVerifier) -> None:
    with pytest.raises(InvalidToken, match="scheme must be Bearer"):
        await rs256.authenticate("Basic dXNlcjpwYXNz")


# --- subject and scope ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("share:acme:billing", {"share:acme:billing"}),
        (
            "share:acme:billing share:bolt:*  gateway:admin",
            {"share:acme:billing", "share:bolt:*", "gateway:admin"},
        ),
        ("", set()),
        (None, set()),
    ],
)
async def test_scope_parsed_from_space_separated_string(
    scope: str | None, expected: set[str], rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    payload = claims(scope=scope)

    caller = await rs256.authenticate(f"Bearer {mint(rsa_signer, payload)}")

    assert caller.scopes == frozenset(expected)
    assert caller.token_id is None


@pytest.mark.parametrize("scope", [["share:acme:billing"], {"share": "acme"}, 7])
async def test_scope_not_a_string_refused(
    scope: object, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    with pytest.raises(InvalidToken, match="scope must be a space-separated string"):
        await rs256.authenticate(f"Bearer {mint(rsa_signer, claims() | {'scope': scope})}")


@pytest.mark.parametrize(
    ("subject", "match"),
    [
        (None, r"no subject \(sub\)"),
        ("", r"no subject"),
        (" \t", r"no subject"),
        (42, r"subject \(sub\) must be a string"),
        ("svc-billing\n2026-01-01 00:00:00  forged", r"invisible characters \(U\+000A\)"),
        ("svc-\x1b[2Jbilling", r"invisible characters \(U\+001B\)"),
        ("svc-\u202egnillib", r"invisible characters \(U\+202E\)"),
        ("svc-\u200bbilling", r"invisible characters \(U\+200B\)"),
        ("svc\u2028billing", r"invisible characters \(U\+2028\)"),
    ],
)
async def test_missing_or_bad_subject_refused(
    subject: object, match: str, rs256: TokenVerifier, rsa_signer: SigningKey
) -> None:
    token = mint(rsa_signer, claims(subject=None) | ({} if subject is None else {"sub": subject}))

    with pytest.raises(InvalidToken, match=match):
        await rs256.authenticate(f"Bearer {token}")


@pytest.mark.parametrize(
    ("scopes", "partner", "purpose", "expected"),
    [
        ({"share:acme:billing"}, "acme", "billing", True),
        ({"share:acme:*"}, "acme", "billing", True),
        ({"share:acme:*"}, "acme", "anything", True),
        ({"share:acme:billing"}, "acme", "marketing", False),
        ({"share:acme:billing"}, "acme-credit", "billing", False),
        ({"share:acme-credit:billing"}, "acme", "billing", False),
        ({"share:*:billing"}, "acme", "billing", False),
        ({"share:*:*"}, "acme", "billing", False),
        ({"share:*"}, "acme", "billing", False),
        ({"*"}, "acme", "billing", False),
        ({"share:acme"}, "acme", "billing", False),
        ({"share:acme:bill*"}, "acme", "billing", False),
        ({"share:acme:billing"}, "ACME", "billing", False),
        ({"Share:acme:billing"}, "acme", "billing", False),
        ({"share:acme:billing "}, "acme", "billing", False),
        ({"gateway:admin"}, "acme", "billing", False),
        (set(), "acme", "billing", False),
        ({"share:acme:"}, "acme", "", False),
        ({"share::billing"}, "", "billing", False),
    ],
)
def test_grants(scopes: set[str], partner: str, purpose: str, expected: bool) -> None:
    assert grants(frozenset(scopes), partner, purpose) is expected


def test_caller_is_frozen() -> None:
    caller = Caller(subject="s", scopes=frozenset(), token_id=None, expires_at=1.0)

    with pytest.raises(AttributeError):
        caller.subject = "other"  # type: ignore[misc]


# --- verified-token cache -------------------------------------------------------------------


def cached_verifier(
    rsa_pem: Path, *, cache_size: int, clock: Clock, leeway_s: float = 0
) -> tuple[TokenVerifier, CountingKeyStore]:
    store = CountingKeyStore(
        load_key_store(KeySettings(algorithms=["RS256"], public_key_file=rsa_pem))
    )
    verifier = TokenVerifier(
        store,
        algorithms=["RS256"],
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_s=leeway_s,
        cache_size=cache_size,
        clock=clock,
    )
    return verifier, store


async def test_cache_hit_skips_verification(rsa_pem: Path, rsa_signer: SigningKey) -> None:
    verifier, store = cached_verifier(rsa_pem, cache_size=10, clock=Clock())
    token = mint(rsa_signer)

    first = await verifier.verify(token)
    first["sub"] = "mutated by a caller"
    second = await verifier.verify(token)

    assert store.selections == 1
    assert second["sub"] == "svc-billing"


async def test_cached_token_past_exp_refused(rsa_pem: Path, rsa_signer: SigningKey) -> None:
    clock = Clock(now=1_700_000_000.0)
    verifier, store = cached_verifier(rsa_pem, cache_size=10, clock=clock)
    token = mint(rsa_signer, now=clock.now, ttl_s=60)
    assert (await verifier.verify(token))["sub"]
    assert verifier.cached_tokens == 1

    clock.now += 59
    assert (await verifier.verify(token))["sub"]
    assert store.selections == 1

    clock.now += 1  # exp itself: a token is good only before it, also from the cache
    await refused(verifier, token, "token has expired")
    assert verifier.cached_tokens == 0


async def test_cache_size_is_bounded_least_recently_used_first(
    rsa_pem: Path, rsa_signer: SigningKey
) -> None:
    verifier, store = cached_verifier(rsa_pem, cache_size=2, clock=Clock())
    first, second, third = (mint(rsa_signer, jti=str(n)) for n in range(3))

    await verifier.verify(first)
    await verifier.verify(second)
    await verifier.verify(first)  # now the most recently used
    await verifier.verify(third)  # evicts `second`
    assert verifier.cached_tokens == 2
    assert store.selections == 3

    await verifier.verify(first)
    await verifier.verify(third)
    assert store.selections == 3
    await verifier.verify(second)
    assert store.selections == 4
    assert verifier.cached_tokens == 2


async def test_cache_size_zero_disables_cache(rsa_pem: Path, rsa_signer: SigningKey) -> None:
    verifier, store = cached_verifier(rsa_pem, cache_size=0, clock=Clock())
    token = mint(rsa_signer)

    await verifier.verify(token)
    await verifier.verify(token)

    assert store.selections == 2
    assert verifier.cached_tokens == 0


async def test_refused_tokens_are_not_cached(rsa_pem: Path, attacker: SigningKey) -> None:
    verifier, store = cached_verifier(rsa_pem, cache_size=10, clock=Clock())
    token = mint(attacker)

    await refused(verifier, token, "signature")
    await refused(verifier, token, "signature")

    assert store.selections == 2
    assert verifier.cached_tokens == 0


async def test_oversized_token_refused_even_before_cache(rs256: TokenVerifier) -> None:
    await refused(rs256, "x" * (MAX_TOKEN_CHARS + 1), "larger than")


# --- property: whatever header and claims the trusted key signs ----------------------------


@dataclass(frozen=True)
class Offset:
    """A time claim as seconds from the moment the token is made."""

    seconds: float


LEEWAY_S = 30.0
_TIMES = st.sampled_from([-LEEWAY_S - 1, -LEEWAY_S, -1.0, 0.0, 0.5, LEEWAY_S, LEEWAY_S + 1, 1e9])
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from([ISSUER, AUDIENCE, "RS256", "none", "HS256", "", "share:acme:*", "1e9"]),
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
# (in the header, name, value): the value None leaves the member out.
CHANGES = st.lists(
    st.one_of(
        st.tuples(
            st.just(True),
            st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku"]),
            st.one_of(st.none(), _JSON.map(lambda v: (v,))),
        ),
        st.tuples(
            st.just(False),
            st.sampled_from(["iss", "aud", "sub", "jti", "scope", "note"]),
            st.one_of(st.none(), _JSON.map(lambda v: (v,)), st.just(([AUDIENCE, "other"],))),
        ),
        st.tuples(
            st.just(False),
            st.sampled_from(["exp", "nbf", "iat"]),
            st.one_of(st.none(), _TIMES.map(lambda t: (Offset(t),)), _JSON.map(lambda v: (v,))),
        ),
    ),
    max_size=3,
)

Change = tuple[bool, str, tuple[object] | None]


def changed_parts(changes: list[Change], now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid header and claim set (scope `share:acme:*`), then `changes` made to them."""
    header: dict[str, Any] = {"typ": "JWT", "alg": "RS256", "kid": "idp-1"}
    payload = claims(scope="share:acme:*", now=now)
    for in_header, name, value in changes:
        part = header if in_header else payload
        if value is None:
            part.pop(name, None)
        else:
            [item] = value
            part[name] = now + item.seconds if isinstance(item, Offset) else item
    return header, payload


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def acceptable(header: Mapping[str, Any], payload: Mapping[str, Any], now: float) -> bool:
    """Whether a token so signed by the one trusted key (a PEM key: any kid) is valid: SPEC 4
    and RFC 7519, written apart from the verifier."""
    if header.get("alg") != "RS256" or "crit" in header or header.get("b64") is False:
        return False
    if "kid" in header and not isinstance(header["kid"], str):
        return False
    audience = payload.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        return False
    if payload.get("iss") != ISSUER or AUDIENCE not in audiences:
        return False
    if any(name in payload and not isinstance(payload[name], str) for name in ("sub", "jti")):
        return False
    expires = _time(payload.get("exp"))
    if expires is None or expires <= now - LEEWAY_S:
        return False
    for name in ("nbf", "iat"):
        if name not in payload:
            continue
        at = _time(payload[name])
        if at is None or at > now + LEEWAY_S:
            return False
    return True


def names_a_caller(payload: Mapping[str, Any]) -> bool:
    subject, scope = payload.get("sub"), payload.get("scope")
    if not isinstance(subject, str) or not subject.strip() or UNSHOWABLE.search(subject):
        return False
    return scope is None or isinstance(scope, str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=CHANGES)
async def test_a_signed_token_is_accepted_exactly_when_its_header_and_claims_are_valid(
    changes: list[Change], rsa_pem: Path, rsa_signer: SigningKey
) -> None:
    now = 1_750_000_000.0
    verifier, _ = cached_verifier(rsa_pem, cache_size=10, clock=Clock(now), leeway_s=LEEWAY_S)
    header, payload = changed_parts(changes, now)
    token = sign_raw(header, payload, rsa_signer)
    valid = acceptable(header, payload, now)
    event(f"valid {valid}")
    for _ in range(2):  # verified, then (if valid) from the cache
        try:
            await verifier.verify(token)
        except InvalidToken:
            assert not valid
        else:
            assert valid
        try:
            await verifier.authenticate(f"Bearer {token}")
        except InvalidToken:
            assert not (valid and names_a_caller(payload))
        else:
            assert valid
            assert names_a_caller(payload)


# --- helpers --------------------------------------------------------------------------------


def _payload(token: str) -> bytes:
    segment = token.split(".")[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@pytest.fixture(autouse=True)
def _no_secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)


async def test_a_key_published_without_a_kid_verifies_no_token_naming_another(
    ec_signer: SigningKey, tmp_path: Path
) -> None:
    # A token's kid names one key: a key the provider published without one is not it.
    unnamed = rsa_key(None)
    path = write_jwks(tmp_path / "jwks.json", unnamed, ec_signer)
    verifier = await build_auth_verifier(
        auth_settings(algorithms=["RS256", "ES256"], jwks_file=path)
    )
    await refused(verifier, mint(unnamed.with_kid("rsa-9")), r"key id \(kid\) is not a trusted key")
    assert (await verifier.verify(mint(ec_signer)))["sub"]
