"""A partner's `upstream.tls`: its CA and the gateway's client certificate, read and checked
once per contract load, and the TLS context the partner's shares go out with."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.contract import UpstreamTls
from gateway.yamlfile import YamlFileError, read_bounded_file

# A CA bundle is a few KB (a system's whole store is a few hundred); a certificate or key, less.
MAX_TLS_FILE_BYTES = 1024 * 1024
_TOO_BIG = (
    f"larger than {MAX_TLS_FILE_BYTES} bytes (1 MiB): a CA bundle, certificate or key is a few KB"
)
# Both spellings OpenSSL writes an encrypted key in: PKCS#8, and the older PEM header.
_ENCRYPTED_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")

Found = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class PartnerTls:
    """A partner's own trust store and the client certificate the gateway presents to it,
    built once per contract load."""

    context: ssl.SSLContext
    # A digest of the files the context was built from. The partner client pools connections
    # by it: none made with one certificate or CA carries a share meant to go with another,
    # and a reload that changes neither keeps the pool.
    identity: str


class _Encrypted(Exception):
    """OpenSSL asked for a passphrase."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL asks on the terminal, which a server has not got: it would
    # hang the start or the reload.
    raise _Encrypted


def tls_problems(tls: UpstreamTls, base_url: str) -> Found:
    """What is wrong with the section as written, before any file is read."""
    found: Found = []
    if not base_url.lower().startswith("https://"):
        found.append(("upstream.tls", "only for an https:// base_url: plain HTTP has no TLS"))
    if tls.ca_file is None and tls.client_cert_file is None and tls.client_key_file is None:
        found.append(
            (
                "upstream.tls",
                "empty: name ca_file and/or client_cert_file with client_key_file, or remove "
                "the section",
            )
        )
    if tls.client_cert_file is not None and tls.client_key_file is None:
        found.append(("upstream.tls.client_key_file", "required with client_cert_file"))
    if tls.client_key_file is not None and tls.client_cert_file is None:
        found.append(("upstream.tls.client_cert_file", "required with client_key_file"))
    return found


def load_partner_tls(tls: UpstreamTls, folder: Path) -> tuple[PartnerTls | None, Found]:
    """The context for a valid `tls` section (see `tls_problems`), its files read once, relative
    paths from `folder` (the contracts folder); or None and the problems, by key path."""
    found: Found = []
    files: dict[str, bytes] = {}
    for field in ("ca_file", "client_cert_file", "client_key_file"):
        name: str | None = getattr(tls, field)
        if name is None:
            continue
        try:
            files[field] = read_bounded_file(folder / name, MAX_TLS_FILE_BYTES, _TOO_BIG)
        except YamlFileError as exc:
            found += [(f"upstream.tls.{field}", f"{name}: {why}") for _, why in exc.problems]
    if found:
        return None, found
    ca = files.get("ca_file")
    cert, key = files.get("client_cert_file"), files.get("client_key_file")
    context, problem = _context(ca)
    if problem is not None:
        return None, [("upstream.tls.ca_file", f"{tls.ca_file}: {problem}")]
    if cert is not None and key is not None:
        found = _load_client(context, cert, key, tls)
        if found:
            return None, found
    digest = hashlib.sha256()
    for part in (ca, cert, key):
        # Each part's length first: no two sets of files hash alike by shifting bytes between.
        digest.update(b"-" if part is None else len(part).to_bytes(8, "big") + part)
    return PartnerTls(context, digest.hexdigest()), []


def _context(ca: bytes | None) -> tuple[ssl.SSLContext, str | None]:
    """TLS 1.2 at least and the host name checked, as for every partner; trusting only `ca`
    when given (none of the system's CAs), the system's store otherwise."""
    if ca is None:
        return ssl.create_default_context(), None
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        return ssl.create_default_context(), "holds no PEM certificate"
    try:
        context = ssl.create_default_context(cadata=ca.decode("ascii"))
    except (UnicodeDecodeError, ssl.SSLError, ValueError):
        return ssl.create_default_context(), "holds no certificate OpenSSL can read"
    return context, None


def _load_client(context: ssl.SSLContext, cert: bytes, key: bytes, tls: UpstreamTls) -> Found:
    cert_at = f"upstream.tls.client_cert_file: {tls.client_cert_file}"
    try:
        x509.load_pem_x509_certificates(cert)
    except ValueError:
        return [("upstream.tls.client_cert_file", f"{tls.client_cert_file}: not a PEM certificate")]
    key_name = tls.client_key_file
    if any(marker in key for marker in _ENCRYPTED_MARKERS):
        return [("upstream.tls.client_key_file", _encrypted(key_name))]
    try:
        load_pem_private_key(key, password=None)
    except TypeError:  # encrypted, in a form the markers above do not show
        return [("upstream.tls.client_key_file", _encrypted(key_name))]
    except (ValueError, UnsupportedAlgorithm):
        return [("upstream.tls.client_key_file", f"{key_name}: not a PEM private key")]
    try:
        with _in_memory(cert) as cert_file, _in_memory(key) as key_file:
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _Encrypted:
        return [("upstream.tls.client_key_file", _encrypted(key_name))]
    except ssl.SSLError as exc:
        return [
            (
                "upstream.tls.client_key_file",
                f"{key_name}: cannot be used with {cert_at} ({exc.reason or exc}): the key "
                "does not match the certificate",
            )
        ]
    return []


def _encrypted(name: str | None) -> str:
    return (
        f"{name}: the private key is encrypted, and a contract has no place for its passphrase: "
        "store it unencrypted, readable by the gateway's user only (openssl pkey -in KEY -out "
        "PLAIN)"
    )


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path OpenSSL can open that holds `data`: `load_cert_chain` reads only files, and the
    bytes must be the ones read and checked, not whatever the file holds a moment later."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("partner-tls", os.MFD_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "wb") as file:
                file.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    # Elsewhere, a file only the gateway's user may read, removed at once.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        yield str(path)
