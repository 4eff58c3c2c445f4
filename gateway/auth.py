"""Caller authentication: bearer tokens verified against the configured keys, and share scopes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import math
import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import jwt
import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options

from gateway.errors import InvalidToken, MalformedBody
from gateway.jsonbody import parse_json
from gateway.pii import UNSHOWABLE
from gateway.settings import AuthSettings, ConsentSettings, KeySettings

log = structlog.get_logger(__name__)

# Refused before any parsing: a bearer token is a few hundred bytes to a few KiB; anything bigger
# is either a mistake or an attempt to make the gateway do work for free.
MAX_TOKEN_CHARS: Final = 8192
# A header or a claim set nests a few levels (a roles claim); a document deeper is no token's.
MAX_TOKEN_JSON_DEPTH: Final = 32
DEFAULT_CONSENT_CACHE_SIZE: Final = 1024
JWKS_FETCH_TIMEOUT_S: Final = 5.0
JWKS_MAX_BYTES: Final = 256 * 1024
# How old the keys from a `jwks_url` may grow before they are fetched again anyway.
JWKS_MAX_AGE_S: Final = 300.0
MIN_HS256_SECRET_BYTES: Final = 32
MIN_RSA_KEY_BITS: Final = 2048

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

_RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class AuthConfigError(Exception):
    """A key source is unusable at start-up or a reload: unreadable file, invalid key, missing
    secret."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated calling service."""

    subject: str
    scopes: frozenset[str]
    token_id: str | None
    expires_at: float


def grants(scopes: frozenset[str], partner: str, purpose: str) -> bool:
    """True iff `scopes` hold `share:<partner>:<purpose>` or `share:<partner>:*`."""
    if not partner or not purpose:
        return False
    return f"share:{partner}:{purpose}" in scopes or f"share:{partner}:*" in scopes


def grants_partner(scopes: frozenset[str], partner: str) -> bool:
    """True iff `scopes` hold `share:<partner>:<anything>`."""
    prefix = f"share:{partner}:"
    return bool(partner) and any(scope.startswith(prefix) for scope in scopes)


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One trusted key and the algorithms it may verify (configured ∩ what the key can do)."""

    key: PublicKey | bytes
    algorithms: frozenset[str]
    kid: str | None = None


class KeyStore(Protocol):
    """Where verification keys come from. `select` never looks at anything but `kid` and `alg`."""

    @property
    def generation(self) -> int:
        """Changes whenever the set of keys may have: tokens verified before are checked again."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def select(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        """The keys that may verify a token with this header (at least one), or InvalidToken."""
        ...


def _capabilities(key: PublicKey | bytes) -> frozenset[str]:
    if isinstance(key, bytes):
        return frozenset({"HS256"})
    if isinstance(key, RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    return frozenset({"EdDSA"})


def _usable_key(
    key: PublicKey | bytes, allowed: frozenset[str], *, kid: str | None = None
) -> VerificationKey:
    """Bind a key to the algorithms it may verify; ValueError when there are none."""
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits is below {MIN_RSA_KEY_BITS}")
    capable = _capabilities(key)
    if not capable:
        raise ValueError("unsupported key type or curve")
    usable = capable & allowed
    if not usable:
        raise ValueError(
            f"key can verify {', '.join(sorted(capable))}, "
            f"none of the configured algorithms ({', '.join(sorted(allowed))})"
        )
    return VerificationKey(key=key, algorithms=usable, kid=kid)


def _public(key: object) -> PublicKey | None:
    # A JWK carrying private parameters still verifies with its public half; keep only that.
    if isinstance(key, RSAPrivateKey | EllipticCurvePrivateKey):
        return key.public_key()
    if isinstance(key, Ed25519PrivateKey | Ed448PrivateKey):
        return key.public_key()
    if isinstance(key, RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey):
        return key
    return None


class NoUsableKey(ValueError):
    """A JWKS document that holds no usable signature key."""


def parse_jwks(document: object, allowed: frozenset[str]) -> tuple[VerificationKey, ...]:
    """The usable signature keys of a JWKS document; NoUsableKey when it holds none, ValueError
    when it is no JWKS document.

    Keys that cannot verify any allowed algorithm (encryption keys, symmetric keys, other curves,
    short RSA keys) are skipped: identity providers publish keys for more than one consumer.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS document (an object with a "keys" array)')
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        label = f"keys[{index}]"
        if not isinstance(jwk, dict):
            skipped.append(f"{label}: not an object")
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            skipped.append(f"{label}: kid is not a string")
            continue
        if kid is not None:
            label = f"{label} (kid {kid[:64]!r})"
        reason = _unusable_jwk_reason(jwk)
        if reason is None:
            try:
                parsed = jwt.PyJWK(jwk)
            # Not only pyjwt's own error: an `alg` of "none" or a list raises others. Never its
            # message either: pyjwt quotes the whole key, private parameters included.
            except (jwt.PyJWTError, NotImplementedError, TypeError, ValueError, KeyError) as exc:
                reason = f"not a key pyjwt can use ({type(exc).__name__})"
            else:
                public = _public(parsed.key)
                if public is None:
                    reason = "not a public key"
                else:
                    alg = jwk.get("alg")
                    if isinstance(alg, str) and alg not in allowed:
                        reason = (
                            f"its alg {_shown(alg)} is none of the configured algorithms "
                            f"({', '.join(sorted(allowed))})"
                        )
                    else:
                        limit = allowed & {alg} if isinstance(alg, str) else allowed
                        try:
                            keys.append(_usable_key(public, limit, kid=kid))
                            continue
                        except ValueError as exc:
                            reason = str(exc)
        skipped.append(f"{label}: {reason}")
        log.info("jwks_key_skipped", key=label, reason=reason)
    if not keys:
        detail = f" ({'; '.join(skipped)})" if skipped else ""
        raise NoUsableKey(f"no usable signature key{detail}")
    return tuple(keys)


def _unusable_jwk_reason(jwk: Mapping[str, Any]) -> str | None:
    if jwk.get("kty") == "oct":
        return "symmetric keys are only accepted through hs256_secret_env"
    use = jwk.get("use")
    if use is not None and use != "sig":
        return f"use is {use!r}, not 'sig'"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops does not include 'verify'"
    return None


def _find(
    keys: Sequence[VerificationKey], kid: str | None, alg: str, *, by_kid: bool
) -> tuple[VerificationKey, ...] | None:
    """The keys for (kid, alg); None when `kid` names no key; InvalidToken when none takes `alg`.

    Several keys may share a kid (a provider rotating a key under its old name publishes both
    for a while): each is tried, so a token signed by either verifies.
    """
    if not keys:
        return None  # a JWKS whose keys were all withdrawn
    if not by_kid:
        candidates: Sequence[VerificationKey] = keys
    elif kid is not None:
        candidates = [key for key in keys if key.kid == kid]
        if not candidates:
            return None
    elif len(keys) == 1:
        candidates = keys
    else:
        raise InvalidToken("token has no key id (kid) and several keys are trusted")
    usable = tuple(key for key in candidates if alg in key.algorithms)
    if not usable:
        raise InvalidToken(f"token algorithm {_shown(alg)} does not match its key")
    return usable


def _trusted(
    keys: Sequence[VerificationKey], kid: str | None, alg: str, *, by_kid: bool
) -> tuple[VerificationKey, ...]:
    """`_find` for a store with nothing to fetch: a kid that names no key is refused at once."""
    found = _find(keys, kid, alg, by_kid=by_kid)
    if found is None:
        raise InvalidToken("token key id (kid) is not a trusted key")
    return found


class StaticKeyStore:
    """Keys held in memory, with nothing to fetch: an HS256 secret from the environment, read
    once; a key file's keys (`FileKeyStore`), read again at each reload."""

    def __init__(self, keys: Sequence[VerificationKey], *, by_kid: bool) -> None:
        if not keys:
            raise ValueError("a key store needs at least one key")
        self._keys = tuple(keys)
        # A secret is the only trusted key: a token's kid says nothing about it.
        self._by_kid = by_kid

    @property
    def generation(self) -> int:
        return 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def select(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        return _trusted(self._keys, kid, alg, by_kid=self._by_kid)


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A key file read whole and every key in it checked, not yet in use."""

    keys: tuple[VerificationKey, ...]
    document: bytes


class FileKeyStore(StaticKeyStore):
    """Keys from a `public_key_file` or a `jwks_file`: read at start, and again at each reload.

    `read` takes the file whole and checks every key, changing nothing; `use` puts what it
    read in place of the keys in use, once the rest of the reload was good too. A file that
    changed moves the generation on, as a JWKS refresh does: the tokens verified under the keys
    it replaced are verified again, so a key taken out of the file no longer counts, cached or
    not.
    """

    def __init__(self, path: Path, allowed: frozenset[str], *, what: str, jwks: bool) -> None:
        self._path = path
        self._allowed = allowed
        self._what = what
        # A PEM key is the only trusted key: a token's kid says nothing about it.
        self._by_kid = jwks
        self._generation = 0
        # A pipe (a FIFO, or `<(...)` given as the path) gives its keys once: read again at a
        # reload it would be empty, or wait, holding the reload, for a writer that never comes.
        self._pipe = _not_regular(path)
        loaded = self._load()
        super().__init__(loaded.keys, by_kid=jwks)
        self._document = loaded.document

    @property
    def generation(self) -> int:
        return self._generation

    def read(self) -> KeyFile:
        """The file's keys as they are now; AuthConfigError (the problem, prefixed with the
        setting's name) when the file cannot be used as the start would refuse it. A pipe keeps
        the keys the start read from it."""
        if self._pipe:
            return KeyFile(self._keys, self._document)
        if _not_regular(self._path):
            raise AuthConfigError(
                f"{self._what}: {self._path} is no longer a regular file; put a key file in "
                "place by renaming a complete file"
            )
        return self._load()

    def _load(self) -> KeyFile:
        document = _read_whole(self._path, self._what)
        if self._by_kid:
            keys = _jwks_keys(document, self._path, self._allowed, self._what)
        else:
            keys = (_pem_key(document, self._path, self._allowed, self._what),)
        return KeyFile(keys, document)

    def use(self, loaded: KeyFile) -> None:
        """Verify with the keys `read` returned from now on (no-op for an unchanged file)."""
        if loaded.document == self._document:
            return  # nothing withdrawn: the verified tokens stay cached
        self._keys, self._document = loaded.keys, loaded.document
        self._generation += 1
        log.info(
            "key_file_reloaded", setting=self._what, file=str(self._path), keys=len(self._keys)
        )


class _FetchError(Exception):
    pass


class _NoUsableKey(_FetchError):
    """A JWKS document was fetched, and holds no key this gateway can use: the provider's
    current set all the same (it withdrew the keys this gateway knew)."""

    def __init__(self, message: str, document: bytes) -> None:
        super().__init__(message)
        self.document = document


def _check_jwks_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise AuthConfigError(f"not a valid URL: {exc}") from exc
    if not host:
        raise AuthConfigError("the URL has no host")
    try:
        host.encode("idna")
    except UnicodeError as exc:  # else found at the first fetch, as a traceback
        raise AuthConfigError("the URL's host name has an empty label or one over 63") from exc
    if parts.username is not None or parts.password is not None:
        # They would be sent as Basic auth, and the URL is written to the log on every refresh.
        raise AuthConfigError("the URL must not hold a user name or password")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and _is_loopback(host):
        return
    raise AuthConfigError("must be https:// (http:// only for a loopback address)")


def _shown_url(url: str) -> str:
    """The URL as logs and errors show it: without its query, which may hold an access key."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# A URL's query as an error message may quote it (`url='https://idp/jwks?key=...'`), cut to
# the next whitespace: a quote may be part of the query, and the message's own end goes too.
_QUERY: Final = re.compile(r"\?\S*")


def _without_queries(message: str) -> str:
    return _QUERY.sub("", message)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteJwksKeyStore:
    """A JWKS fetched from the identity provider at start-up, again when a new kid appears, and
    every `max_age_s` in the background.

    A refresh for an unknown kid happens at most once per `refresh_min_interval_s`, so a stream
    of tokens with invented kids costs one fetch per interval, not one per token. The start-up
    fetch does not count against the interval: a kid rotated in just after start-up is found at
    once. The background refresh drops a key the provider withdrew (and takes a key replaced
    under the same kid) although no token names a new kid. A failed refresh keeps the keys
    already held; only a changed document clears the verified-token cache.
    """

    def __init__(
        self,
        url: str,
        algorithms: Iterable[str],
        *,
        refresh_min_interval_s: float,
        max_age_s: float = JWKS_MAX_AGE_S,
        timeout_s: float = JWKS_FETCH_TIMEOUT_S,
        max_bytes: int = JWKS_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_jwks_url(url)
        self._url = url
        self._shown = _shown_url(url)
        self._allowed = frozenset(algorithms)
        self._interval = refresh_min_interval_s
        self._max_age = max_age_s
        self._document = b""  # the last document fetched: an unchanged one keeps the cache
        self._ageing: asyncio.Task[None] | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_bytes = max_bytes
        self._clock = clock
        self._keys: tuple[VerificationKey, ...] = ()
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._last_refresh: float | None = None
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            self._keys, self._document = await self._fetch()
        except _FetchError as exc:
            await self.close()
            raise AuthConfigError(f"cannot load the JWKS from {self._shown}: {exc}") from exc
        self._ageing = asyncio.get_running_loop().create_task(self._refresh_when_old())

    async def close(self) -> None:
        ageing, self._ageing = self._ageing, None
        if ageing is not None:
            ageing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ageing
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _refresh_when_old(self) -> None:
        while True:
            await asyncio.sleep(self._max_age)
            try:
                async with self._lock:
                    await self._refresh()
            except Exception as exc:  # a fault must not end the refreshes for good
                log.warning(
                    "jwks_refresh_failed", url=self._shown, error=_without_queries(repr(exc))
                )

    async def select(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        if self._session is None:
            raise RuntimeError("RemoteJwksKeyStore.select() called before start()")
        keys = _find(self._keys, kid, alg, by_kid=True)
        if keys is None:
            async with self._lock:
                # Another request may have refreshed while this one waited for the lock.
                keys = _find(self._keys, kid, alg, by_kid=True)
                if keys is None and self._may_refresh():
                    await self._refresh()
                    keys = _find(self._keys, kid, alg, by_kid=True)
        if keys is None:
            raise InvalidToken("token key id (kid) is not a trusted key")
        return keys

    def _may_refresh(self) -> bool:
        return self._last_refresh is None or (self._clock() - self._last_refresh >= self._interval)

    async def _refresh(self) -> None:
        # The attempt counts even when it fails, so an unreachable provider is not hammered.
        self._last_refresh = self._clock()
        try:
            keys, document = await self._fetch()
        except _NoUsableKey as exc:
            # Kept, the keys withdrawn would go on verifying tokens (a compromised key is
            # withdrawn so): every token is refused until the set holds a usable key again.
            log.error("jwks_no_usable_key", url=self._shown, error=str(exc))
            keys, document = (), exc.document
        except _FetchError as exc:
            log.warning("jwks_refresh_failed", url=self._shown, error=str(exc))
            return
        if document == self._document:
            return  # nothing withdrawn: the verified tokens stay cached
        self._keys, self._document = keys, document
        # A key may have been withdrawn (rotated out, compromised): the tokens it signed are no
        # longer taken from the verifier's cache.
        self._generation += 1
        log.info("jwks_refreshed", url=self._shown, keys=len(self._keys))

    async def _fetch(self) -> tuple[tuple[VerificationKey, ...], bytes]:
        session = self._session
        if session is None:
            raise _FetchError("not started")
        try:
            async with session.get(
                self._url,
                allow_redirects=False,
                headers={"Accept": "application/jwk-set+json, application/json"},
            ) as response:
                if response.status != 200:
                    raise _FetchError(f"HTTP status {response.status}")
                declared = response.content_length
                if declared is not None and declared > self._max_bytes:
                    raise _FetchError(f"response is larger than {self._max_bytes} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise _FetchError(f"response is larger than {self._max_bytes} bytes")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # ValueError: a host name the resolver cannot encode, found only when asked.
            problem = _without_queries(str(exc))  # some name the URL they asked, normalised
            raise _FetchError(f"{type(exc).__name__}: {problem}".rstrip(": ")) from exc
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _FetchError(str(exc)) from exc
        try:
            return parse_jwks(document, self._allowed), bytes(body)
        except NoUsableKey as exc:
            raise _NoUsableKey(str(exc), bytes(body)) from exc
        except ValueError as exc:
            raise _FetchError(str(exc)) from exc


# A key file rewritten in place (truncated, then written) may be read half-written: such a
# read is tried again, a few times, as a contract's is.
KEY_FILE_READ_ATTEMPTS: Final = 3
KEY_FILE_READ_PAUSE_S: Final = 0.05
# As a fetched JWKS document is: a key set is a few KiB. Read no further than that, so that a
# path naming the wrong thing (a log file, `/dev/zero`) is refused instead of filling memory.
KEY_FILE_MAX_BYTES: Final = JWKS_MAX_BYTES


def _read_whole(path: Path, what: str) -> bytes:
    """The file's bytes, all of one version of it: never the start of a new file and the end of
    the old one, which may still parse as some other key."""
    for attempt in range(KEY_FILE_READ_ATTEMPTS):
        if attempt:
            time.sleep(KEY_FILE_READ_PAUSE_S)
        try:
            with path.open("rb") as file:
                before = os.fstat(file.fileno())
                data = file.read(KEY_FILE_MAX_BYTES + 1)
            # The name, not the file read: one renamed into place meanwhile is read next.
            after = os.stat(path)
        except OSError as exc:
            raise AuthConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from exc
        if len(data) > KEY_FILE_MAX_BYTES:
            raise AuthConfigError(
                f"{what}: {path} is larger than {KEY_FILE_MAX_BYTES} bytes; a key file holds "
                "a few KiB"
            )
        if not stat.S_ISREG(before.st_mode):
            return data  # a pipe (read at start only) has no size or version to compare
        if len(data) == before.st_size and _file_version(before) == _file_version(after):
            return data
    raise AuthConfigError(
        f"{what}: {path} kept changing while it was read; put a key file in place by renaming "
        "a complete file"
    )


def _not_regular(path: Path) -> bool:
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False  # the read says what is wrong with it


def _file_version(status: os.stat_result) -> tuple[int, ...]:
    # ctime as well as mtime: a writer can set mtime back (`cp -p`, `touch -r`), never ctime.
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _pem_key(data: bytes, path: Path, allowed: frozenset[str], what: str) -> VerificationKey:
    if b"PRIVATE KEY-----" in data:
        raise AuthConfigError(f"{what}: {path} holds a private key; configure the public key")
    if b"-----BEGIN CERTIFICATE" in data:
        raise AuthConfigError(
            f"{what}: {path} holds a certificate; extract its public key "
            "(openssl x509 -pubkey -noout)"
        )
    try:
        loaded = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AuthConfigError(f"{what}: {path} is not a PEM public key: {exc}") from exc
    public = _public(loaded)
    if public is None:
        raise AuthConfigError(
            f"{what}: {path}: unsupported key type {type(loaded).__name__} "
            "(use RSA, EC P-256/P-384/P-521 or Ed25519)"
        )
    try:
        return _usable_key(public, allowed)
    except ValueError as exc:
        raise AuthConfigError(f"{what}: {path}: {exc}") from exc


def _jwks_keys(
    data: bytes, path: Path, allowed: frozenset[str], what: str
) -> tuple[VerificationKey, ...]:
    # A set with no usable key is refused here, where a `jwks_url` would withdraw every key: a
    # start without a key is refused, and a reload is refused as the start would be.
    try:
        return parse_jwks(json.loads(data), allowed)
    except (ValueError, RecursionError) as exc:
        raise AuthConfigError(f"{what}: {path}: {exc}") from exc


def _load_secret(name: str, environ: Mapping[str, str], what: str) -> VerificationKey:
    value = environ.get(name)
    if not value:
        raise AuthConfigError(f"{what}: environment variable {name} is not set or empty")
    secret = value.encode("utf-8")
    if len(secret) < MIN_HS256_SECRET_BYTES:
        raise AuthConfigError(
            f"{what}: the secret in {name} is {len(secret)} bytes; "
            f"HS256 needs at least {MIN_HS256_SECRET_BYTES}"
        )
    try:
        # pyjwt refuses, token by token, a secret that reads as a PEM or SSH key or a JWK.
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError as exc:
        raise AuthConfigError(
            f"{what}: the secret in {name} reads as a key, not a secret: {exc}"
        ) from exc
    return VerificationKey(key=secret, algorithms=frozenset({"HS256"}))


def load_key_store(
    settings: KeySettings,
    *,
    section: str = "auth",
    environ: Mapping[str, str] | None = None,
) -> KeyStore:
    """The key store a `KeySettings` names; local keys are read now, a JWKS URL on start().

    The keys of a file are read again at each reload (`FileKeyStore`); a secret from the
    environment is not: a running process's environment does not change."""
    allowed = frozenset(settings.algorithms)
    if settings.public_key_file is not None:
        return FileKeyStore(
            settings.public_key_file, allowed, what=f"{section}.public_key_file", jwks=False
        )
    if settings.jwks_file is not None:
        return FileKeyStore(settings.jwks_file, allowed, what=f"{section}.jwks_file", jwks=True)
    if settings.hs256_secret_env is not None:
        env = os.environ if environ is None else environ
        secret = _load_secret(settings.hs256_secret_env, env, f"{section}.hs256_secret_env")
        return StaticKeyStore([secret], by_kid=False)
    if settings.jwks_url is not None:
        try:
            return RemoteJwksKeyStore(
                settings.jwks_url,
                allowed,
                refresh_min_interval_s=settings.jwks_refresh_min_interval_s,
            )
        except AuthConfigError as exc:
            raise AuthConfigError(f"{section}.jwks_url: {exc}") from exc
    raise AuthConfigError(f"{section}: no key source configured")


# --- tokens -----------------------------------------------------------------------------------


# The algorithm names a token may carry (RFC 7518, RFC 8037): the only header values echoed
# in a refusal, which is also logged; anything else is the caller's free text.
_ALGORITHM_NAMES: Final = frozenset(
    {"none", "EdDSA", *(f"{f}{n}" for f in ("HS", "RS", "PS", "ES") for n in (256, 384, 512))}
)


def _shown(value: object) -> str:
    if isinstance(value, str) and value in _ALGORITHM_NAMES:
        return repr(value)
    return "(not a registered algorithm name)"


def _read_token(token: str) -> dict[str, Any]:
    """The header of a compact JWS: three canonical segments, header and claims strict JSON."""
    segments = token.split(".")
    if len(segments) != 3:
        raise InvalidToken("token is malformed: not a signed JWT (header.payload.signature)")
    # pyjwt also takes padding and nonzero unused bits: each would be another spelling of the
    # same token, verified and cached again under its own entry.
    for name, part in zip(("header", "payload", "signature"), segments, strict=True):
        if not _canonical_b64url(part):
            raise InvalidToken(f"token is malformed: {name} is not unpadded base64url")
    header = _strict_json(segments[0], "header")
    # Read here, before any key is chosen: pyjwt reads the claims only once the signature holds,
    # and with a parser that takes what this one refuses.
    _strict_json(segments[1], "claim set")
    return header


def _strict_json(segment: str, name: str) -> dict[str, Any]:
    """One JSON object as the body parser takes it: UTF-8 without a BOM, no duplicate names (the
    last one would win, where another reader takes the first), no NaN, no lone surrogate."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return parse_json(raw, max_depth=MAX_TOKEN_JSON_DEPTH)
    except (binascii.Error, MalformedBody) as exc:
        # Not the parser's message: it speaks of a body, and of a partner.
        raise InvalidToken(f"token is malformed: its {name} is not one strict JSON object") from exc


def _canonical_b64url(segment: str) -> bool:
    """The one base64url spelling of its bytes that RFC 7515 allows: no padding, unused bits 0."""
    if not _B64URL.fullmatch(segment):
        return False
    tail = len(segment) % 4
    if tail == 0:
        return True
    if tail == 1:
        return False
    unused = 0b1111 if tail == 2 else 0b11
    return _B64URL_ALPHABET.index(segment[-1]) & unused == 0


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    # Only an absent claim is no date: `"nbf": null` is a date no one can read, not none at all.
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise InvalidToken(f"token claim {name} must be a number of seconds since the epoch")


def _jwt_failure(exc: Exception) -> InvalidToken:
    """One meaningful message per pyjwt failure; the order matters (subclasses first)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return InvalidToken(f"token is missing the {exc.claim} claim")
    if isinstance(exc, jwt.InvalidIssuerError):
        return InvalidToken("token issuer (iss) is not accepted")
    if isinstance(exc, jwt.InvalidAudienceError):
        return InvalidToken("token audience (aud) is not accepted")
    if isinstance(exc, InvalidSubjectError):
        return InvalidToken("token subject (sub) must be a string")
    if isinstance(exc, InvalidJTIError):
        return InvalidToken("token id (jti) must be a string")
    if isinstance(exc, jwt.InvalidSignatureError):
        return InvalidToken("token signature is invalid")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return InvalidToken("token algorithm is not allowed for its key")
    if isinstance(exc, jwt.DecodeError):
        return InvalidToken("token is malformed")
    if isinstance(exc, jwt.InvalidKeyError):
        return InvalidToken("token key is not usable")
    message = str(exc)[:120] or type(exc).__name__
    return InvalidToken(f"token is invalid: {message}")


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value, or InvalidToken."""
    if authorization is None or not authorization.strip():
        raise InvalidToken("missing Authorization header")
    parts = authorization.split(" ")
    if parts[0].lower() != "bearer":
        raise InvalidToken("Authorization scheme must be Bearer")
    if len(parts) != 2 or not parts[1]:
        raise InvalidToken("Authorization header must be 'Bearer <token>'")
    return parts[1]


def caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    """The Caller a verified token describes, or InvalidToken."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidToken("token has no subject (sub)")
    if found := UNSHOWABLE.search(subject):
        # It is the share record's caller, shown in `logs query` tables and `admin_action`
        # lines: a line break or an escape sequence there would forge a row, an override
        # reorder it. Not echoed: its code point says where.
        raise InvalidToken(
            "token subject (sub) must not contain control or invisible characters "
            f"(U+{ord(found.group()):04X})"
        )
    scope = claims.get("scope", "")
    if scope is None:
        scope = ""
    if not isinstance(scope, str):
        raise InvalidToken("token scope must be a space-separated string")
    token_id = claims.get("jti")
    expires_at = _numeric_date(claims, "exp")
    if expires_at is None:
        raise InvalidToken("token is missing the exp claim")
    return Caller(
        subject=subject,
        scopes=frozenset(part for part in scope.split(" ") if part),
        token_id=token_id if isinstance(token_id, str) else None,
        expires_at=expires_at,
    )


@dataclass(frozen=True, slots=True)
class _Cached:
    claims: dict[str, Any]
    expires_at: float
    caller: Caller | None  # None: the claims describe no caller (consent tokens, or refused)
    generation: int  # of the key store when the token was verified


class TokenVerifier:
    """Verifies bearer tokens: signature by a trusted key, allowed algorithm, exp, iss, aud.

    Verified tokens are cached by their exact string until their `exp`; every hit checks the
    clock again, so a cached token is never accepted after it expires, nor after the key store
    changed its keys (a JWKS refresh) without verifying it again.
    """

    def __init__(
        self,
        keys: KeyStore,
        *,
        algorithms: Iterable[str],
        issuer: str | None,
        audience: str | None,
        leeway_s: float = 0,
        cache_size: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if issuer == "" or audience == "":
            raise AuthConfigError("issuer and audience must not be empty strings")
        if cache_size < 0:
            raise AuthConfigError("cache_size must not be negative")
        allowed = frozenset(algorithms) - {"none"}
        if not allowed:
            raise AuthConfigError("no algorithm is allowed")
        self._keys = keys
        self._algorithms = allowed
        self._issuer = issuer
        self._audience = audience
        self._leeway = float(leeway_s)
        self._clock = clock
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        required = ["exp"]
        if issuer is not None:
            required.append("iss")
        if audience is not None:
            required.append("aud")
        # Time claims are checked here, not by pyjwt: pyjwt accepts a numeric string as `exp`,
        # and one clock for fresh and cached tokens keeps the two paths identical.
        self._options: Options = {
            "verify_signature": True,
            "require": required,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": issuer is not None,
            "verify_aud": audience is not None,
            "strict_aud": False,
            "verify_sub": True,
            "verify_jti": True,
            "enforce_minimum_key_length": True,
        }

    async def start(self) -> None:
        await self._keys.start()

    async def close(self) -> None:
        await self._keys.close()
        self._cache.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def leeway_s(self) -> float:
        """How far the issuer's clock may be from ours: how much a token's times are trusted."""
        return self._leeway

    @property
    def cached_tokens(self) -> int:
        return len(self._cache)

    @property
    def key_store(self) -> KeyStore:
        return self._keys

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller of an `Authorization` header value, or InvalidToken."""
        token = bearer_token(authorization)
        if len(token) <= MAX_TOKEN_CHARS:
            entry = self._cache_entry(token, self._clock())
            if entry is not None and entry.caller is not None:
                return entry.caller
        return caller_from_claims(await self.verify(token))

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token, or InvalidToken naming what is wrong."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken(f"token is larger than {MAX_TOKEN_CHARS} bytes")
        now = self._clock()
        cached = self._cache_get(token, now)
        if cached is not None:
            return dict(cached)
        if not token.isascii():
            raise InvalidToken("token is malformed: not ASCII")
        header = _read_token(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise InvalidToken("token header has no algorithm (alg)")
        if alg.lower() == "none":
            raise InvalidToken("unsigned tokens (alg none) are not accepted")
        if "crit" in header:
            raise InvalidToken("token header 'crit' names extensions that are not supported")
        if alg not in self._algorithms:
            raise InvalidToken(f"token algorithm {_shown(alg)} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("token key id (kid) must be a string")
        # Only kid and alg choose the key: jku, x5u, x5c and jwk are never read.
        keys = await self._keys.select(kid, alg)
        claims = self._decode(token, alg, keys)
        # Selecting a key may have waited for a JWKS fetch: judge the times by the clock now.
        now = self._clock()
        expires_at = self._check_times(claims, now)
        self._cache_put(token, claims, expires_at, now)
        return dict(claims)

    def _decode(self, token: str, alg: str, keys: Sequence[VerificationKey]) -> dict[str, Any]:
        try:
            for key in keys[:-1]:
                # Another key under the same kid may have signed it. The signature is checked
                # before any claim, so only a wrong signature is the key's fault.
                with contextlib.suppress(jwt.InvalidSignatureError):
                    return self._decode_with(token, alg, key)
            return self._decode_with(token, alg, keys[-1])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise _jwt_failure(exc) from exc

    def _decode_with(self, token: str, alg: str, key: VerificationKey) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            options=self._options,
            issuer=self._issuer,
            audience=self._audience,
        )
        return claims

    def _check_times(self, claims: Mapping[str, Any], now: float) -> float:
        expires_at = _numeric_date(claims, "exp")
        if expires_at is None:
            raise InvalidToken("token is missing the exp claim")
        if expires_at <= now - self._leeway:
            raise InvalidToken("token has expired")
        not_before = _numeric_date(claims, "nbf")
        if not_before is not None and not_before > now + self._leeway:
            raise InvalidToken("token is not valid yet (nbf is in the future)")
        issued_at = _numeric_date(claims, "iat")
        if issued_at is not None and issued_at > now + self._leeway:
            raise InvalidToken("token was issued in the future (iat)")
        return expires_at

    def _cache_get(self, token: str, now: float) -> dict[str, Any] | None:
        entry = self._cache_entry(token, now)
        return None if entry is None else entry.claims

    def _cache_entry(self, token: str, now: float) -> _Cached | None:
        entry = self._cache.get(token)
        if entry is None:
            return None
        if now >= entry.expires_at or entry.generation != self._keys.generation:
            # Past exp a token is only good within the leeway, and under other keys perhaps
            # not at all: the full path decides.
            del self._cache[token]
            return None
        self._cache.move_to_end(token)
        return entry

    def _cache_put(self, token: str, claims: dict[str, Any], expires_at: float, now: float) -> None:
        if self._cache_size == 0 or now >= expires_at:
            return
        try:
            # Built once per token, not on every hit; claims that name no caller build none.
            caller: Caller | None = caller_from_claims(claims)
        except InvalidToken:
            caller = None
        self._cache[token] = _Cached(claims, expires_at, caller, self._keys.generation)
        self._cache.move_to_end(token)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


async def build_verifier(
    settings: KeySettings,
    *,
    issuer: str | None,
    audience: str | None,
    cache_size: int,
    section: str = "auth",
    environ: Mapping[str, str] | None = None,
) -> TokenVerifier:
    """A verifier for one key source; AuthConfigError on unusable keys or a missing secret.

    Local keys are loaded here. A `jwks_url` is fetched by `start()` (also an AuthConfigError on
    failure), which the caller pairs with `close()`.
    """
    store = load_key_store(settings, section=section, environ=environ)
    try:
        return TokenVerifier(
            store,
            algorithms=settings.algorithms,
            issuer=issuer,
            audience=audience,
            leeway_s=settings.leeway_s,
            cache_size=cache_size,
        )
    except AuthConfigError as exc:
        raise AuthConfigError(f"{section}: {exc}") from exc


async def build_auth_verifier(
    settings: AuthSettings, *, environ: Mapping[str, str] | None = None
) -> TokenVerifier:
    """The verifier of callers' bearer tokens (`auth:`)."""
    return await build_verifier(
        settings,
        issuer=settings.issuer,
        audience=settings.audience,
        cache_size=settings.token_cache_size,
        section="auth",
        environ=environ,
    )


async def build_consent_verifier(
    settings: ConsentSettings, *, environ: Mapping[str, str] | None = None
) -> TokenVerifier:
    """The verifier of `X-Consent-Token` headers (`consent:`); iss/aud checked only if set."""
    return await build_verifier(
        settings,
        issuer=settings.issuer,
        audience=settings.audience,
        cache_size=DEFAULT_CONSENT_CACHE_SIZE,
        section="consent",
        environ=environ,
    )
