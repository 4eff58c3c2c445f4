"""Test keys and tokens: generate RSA/EC/Ed25519 keys and HS256 secrets, write PEM/JWKS, mint JWTs.

Import it from any test module (`from tokens import rsa_key, mint`). Keys are real; generate them
once per session in a fixture, RSA generation takes tens of milliseconds.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ISSUER = "https://idp.test.example"
AUDIENCE = "share-gateway"
SUBJECT = "svc-billing"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key that signs test tokens: an asymmetric private key, or an HS256 secret."""

    algorithm: str
    private: PrivateKey | bytes
    kid: str | None = None

    def with_kid(self, kid: str | None) -> SigningKey:
        return SigningKey(algorithm=self.algorithm, private=self.private, kid=kid)

    def with_algorithm(self, algorithm: str) -> SigningKey:
        """The same key signing with another algorithm of its family (RS384, PS256, ...)."""
        return SigningKey(algorithm=algorithm, private=self.private, kid=self.kid)

    @property
    def secret(self) -> bytes:
        if not isinstance(self.private, bytes):
            raise TypeError(f"{self.algorithm} key has no shared secret")
        return self.private

    def public_pem(self) -> bytes:
        if isinstance(self.private, bytes):
            raise TypeError("an HS256 secret has no public key")
        return self.private.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self, **members: Any) -> dict[str, Any]:
        """The public JWK (with kid, alg and use unless overridden by `members`)."""
        if isinstance(self.private, bytes):
            raise TypeError("an HS256 secret has no public JWK")
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        jwk.update({"alg": self.algorithm, "use": "sig"})
        if self.kid is not None:
            jwk["kid"] = self.kid
        jwk.update(members)
        return {name: value for name, value in jwk.items() if value is not None}

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.public_pem())
        return path


def rsa_key(kid: str | None = None, *, bits: int = 2048, algorithm: str = "RS256") -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return SigningKey(algorithm=algorithm, private=private, kid=kid)


def ec_key(kid: str | None = None) -> SigningKey:
    """A P-256 key (ES256)."""
    return SigningKey(algorithm="ES256", private=ec.generate_private_key(ec.SECP256R1()), kid=kid)


def ed25519_key(kid: str | None = None) -> SigningKey:
    return SigningKey(algorithm="EdDSA", private=ed25519.Ed25519PrivateKey.generate(), kid=kid)


def hs256_key(secret: bytes | None = None) -> SigningKey:
    """An HS256 secret (random, 48 bytes of URL-safe text, unless given)."""
    value = secret if secret is not None else secrets.token_urlsafe(36).encode()
    return SigningKey(algorithm="HS256", private=value)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def write_jwks(path: Path, *keys: SigningKey) -> Path:
    path.write_text(json.dumps(jwks(*keys)), encoding="utf-8")
    return path


def claims(
    *,
    issuer: str | None = ISSUER,
    audience: str | list[str] | None = AUDIENCE,
    subject: str | None = SUBJECT,
    scope: str | Iterable[str] | None = None,
    ttl_s: float = 300,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A typical claim set; pass None to leave a claim out, `extra` to add or override any."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"iat": issued, "exp": issued + int(ttl_s)}
    if issuer is not None:
        payload["iss"] = issuer
    if audience is not None:
        payload["aud"] = audience
    if subject is not None:
        payload["sub"] = subject
    if scope is not None:
        payload["scope"] = scope if isinstance(scope, str) else " ".join(scope)
    payload.update(extra)
    return {name: value for name, value in payload.items() if value is not None}


def mint(
    key: SigningKey,
    payload: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, Any] | None = None,
    omit: Iterable[str] = (),
    **claim_args: Any,
) -> str:
    """A token signed by `key`: `payload` as given, else `claims(**claim_args)`.

    `omit` drops claims from the result (e.g. `omit=["exp"]`); `headers` adds header parameters
    (kid defaults to the key's).
    """
    body = dict(payload) if payload is not None else claims(**claim_args)
    for name in omit:
        body.pop(name, None)
    header: dict[str, Any] = {"typ": "JWT", "alg": key.algorithm}
    if key.kid is not None:
        header["kid"] = key.kid
    header.update(headers or {})
    return sign_raw(header, body, key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_raw(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: SigningKey | None = None,
    *,
    sign_as: str | None = None,
    secret: bytes | None = None,
) -> str:
    """Assemble a compact JWS exactly as given, with no checks: for tokens an attacker would forge.

    The signature is made by `key` with `sign_as` (default: the key's algorithm), or by HMAC
    with `secret` (e.g. a public key PEM, for key confusion), or left empty when neither is given.
    The header is written as is: it may claim any `alg`. Either part given as bytes is taken
    as its exact JSON text (duplicate names, another encoding).
    """
    head = header if isinstance(header, bytes) else json.dumps(dict(header)).encode()
    body = payload if isinstance(payload, bytes) else json.dumps(dict(payload)).encode()
    signing_input = f"{_b64(head)}.{_b64(body)}".encode("ascii")
    if secret is not None:
        signature = jwt.get_algorithm_by_name(sign_as or "HS256").sign(signing_input, secret)
    elif key is not None:
        algorithm = jwt.get_algorithm_by_name(sign_as or key.algorithm)
        signature = algorithm.sign(signing_input, key.private)
    else:
        signature = b""
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"


def unsigned(payload: Mapping[str, Any] | None = None, **claim_args: Any) -> str:
    """An `alg: none` token with an empty signature."""
    body = dict(payload) if payload is not None else claims(**claim_args)
    return sign_raw({"typ": "JWT", "alg": "none"}, body)
