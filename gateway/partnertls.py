"""A partner's `upstream.tls`: its CA and the gateway's client certificate, read and checked
once per contract load, and the TLS context the partner's shares go out with."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import ssl
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
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

CA_PATH: Final = "upstream.tls.ca_file"
CLIENT_CERT_PATH: Final = "upstream.tls.client_cert_file"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What an operator needs to tell a certificate apart and know how long it holds; never
    its key."""

    subject: str  # RFC 4514, as `openssl x509 -nameopt RFC2253` prints it
    issuer: str
    serial: str  # upper-case hex, as `openssl x509 -serial` prints it
    not_before: datetime  # UTC
    not_after: datetime  # UTC
    sha256_fingerprint: str  # AB:CD:..., as `openssl x509 -fingerprint -sha256` prints it
    # What cryptography warned of as it read the certificate (see `read_quietly`): OpenSSL
    # took it, and it is used all the same.
    notices: tuple[str, ...] = ()

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateInfo:
        return cls(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            serial=_serial_text(certificate.serial_number),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            sha256_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
        )

    def as_json(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": utc_text(self.not_before),
            "not_after": utc_text(self.not_after),
            "sha256_fingerprint": self.sha256_fingerprint,
        }


def read_quietly(read: Callable[[], T]) -> tuple[T, tuple[str, ...]]:
    """What `read` returns, and the messages of the warnings given while it ran. A certificate
    OpenSSL takes may still be odd to cryptography (a country `C=USA`, as real CAs have issued):
    Python would print its warning on stderr amid the JSON log lines, or raise it under
    `-W error`. The gateway says it as a notice of its own instead."""
    # `catch_warnings` swaps process-wide state: a warning another thread gave meanwhile would
    # be taken for the certificate's. Reloads read one at a time, and the gateway's other threads
    # give none in operation; telling threads apart would take the warnings module's internals.
    with warnings.catch_warnings(record=True) as caught:
        # Every time: by default a warning is shown once per place in the library, and each
        # file's certificate is to be named.
        warnings.simplefilter("always")
        value = read()
    return value, tuple(dict.fromkeys(str(warning.message) for warning in caught))


def read_certificates(load: Callable[[], Sequence[x509.Certificate]]) -> list[CertificateInfo]:
    """What each certificate `load` reads says, with its notices; raises what `load` raises."""
    certificates, at_load = read_quietly(load)
    infos = []
    for index, certificate in enumerate(certificates):
        # cryptography parses a certificate's fields as they are asked for, so most warnings
        # come here; one of the load itself is said with the first certificate.
        info, notices = read_quietly(functools.partial(CertificateInfo.of, certificate))
        notices = (*at_load, *notices) if index == 0 else notices
        infos.append(dataclasses.replace(info, notices=notices))
    return infos


def dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is for (its subject alternative names), as written."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(names.value.get_values_for_type(x509.DNSName))


def _serial_text(serial: int) -> str:
    # Whole bytes, as OpenSSL prints the number: `0ABC`, not `ABC`, which an operator comparing
    # the two would take for another certificate.
    digits = f"{serial:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


@dataclass(frozen=True, slots=True)
class PartnerTls:
    """A partner's own trust store and the client certificate the gateway presents to it,
    built once per contract load."""

    context: ssl.SSLContext
    # A digest of the files the context was built from. The partner client pools connections
    # by it: none made with one certificate or CA carries a share meant to go with another,
    # and a reload that changes neither keeps the pool.
    identity: str
    # The file names as the contract gives them, and what their certificates say, read with
    # them: the warnings and the admin API judge them again later without touching the files.
    ca_file: str | None = None
    ca: tuple[CertificateInfo, ...] = ()
    client_cert_file: str | None = None
    client_certificate: CertificateInfo | None = None


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
    authorities: tuple[CertificateInfo, ...] = ()
    if ca is None:
        context, problem = ssl.create_default_context(), None
    else:
        # Only what OpenSSL reads of the file: the warnings and the listing name the CAs it
        # trusts, not a certificate it skipped (a block whose first line is indented).
        trusted = _blocks(ca)
        context, problem = _context(ca, trusted)
        if problem is None:
            authorities, problem = _authorities(trusted)
    if problem is not None:
        return None, [(CA_PATH, f"{tls.ca_file}: {problem}")]
    client = None
    if cert is not None and key is not None:
        client, found = _load_client(context, cert, key, tls)
        if found:
            return None, found
    digest = hashlib.sha256()
    for part in (ca, cert, key):
        # Each part's length first: no two sets of files hash alike by shifting bytes between.
        digest.update(b"-" if part is None else len(part).to_bytes(8, "big") + part)
    partner_tls = PartnerTls(
        context,
        digest.hexdigest(),
        ca_file=tls.ca_file,
        ca=authorities,
        client_cert_file=tls.client_cert_file if client is not None else None,
        client_certificate=client,
    )
    return partner_tls, []


def _context(ca: bytes, trusted: bytes) -> tuple[ssl.SSLContext, str | None]:
    """TLS 1.2 at least and the host name checked, as for every partner, trusting only the
    certificates of `trusted` (the PEM blocks of the `ca_file` `ca`), none of the system's."""
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        return ssl.create_default_context(), "holds no PEM certificate"
    if b"-----BEGIN CERTIFICATE-----" not in trusted:
        # An empty `cadata` would count as none given: the system's store would be trusted.
        return ssl.create_default_context(), "holds no certificate OpenSSL can read"
    try:
        return ssl.create_default_context(cadata=trusted.decode("ascii")), None
    except (UnicodeDecodeError, ssl.SSLError, ValueError):
        return ssl.create_default_context(), "holds no certificate OpenSSL can read"


def _blocks(pem: bytes) -> bytes:
    """`pem` without the lines outside its PEM blocks: OpenSSL skips them, but takes PEM text
    only in ASCII, and some systems' bundles label each certificate in UTF-8. A block cut
    short runs to the end, for OpenSSL to refuse."""
    kept: list[bytes] = []
    inside = False
    for line in pem.splitlines(keepends=True):
        inside = inside or line.startswith(b"-----BEGIN ")
        if inside:
            kept.append(line)
        inside = inside and not line.startswith(b"-----END ")
    return b"".join(kept)


def _authorities(ca: bytes) -> tuple[tuple[CertificateInfo, ...], str | None]:
    """What each certificate of a bundle OpenSSL has taken says, for the warnings."""
    try:
        certificates = read_certificates(functools.partial(x509.load_pem_x509_certificates, ca))
    except ValueError:
        # OpenSSL took it, yet its dates cannot be read: refused rather than never warned of.
        return (), "holds a certificate whose validity dates cannot be read"
    return tuple(certificates), None


def _load_client(
    context: ssl.SSLContext, cert: bytes, key: bytes, tls: UpstreamTls
) -> tuple[CertificateInfo | None, Found]:
    cert_at = f"{CLIENT_CERT_PATH}: {tls.client_cert_file}"
    try:
        # The first is ours; any after it, the chain up to the partner's CA.
        [ours] = read_certificates(lambda: x509.load_pem_x509_certificates(cert)[:1])
    except ValueError:
        return None, [(CLIENT_CERT_PATH, f"{tls.client_cert_file}: not a PEM certificate")]
    key_name = tls.client_key_file
    if any(marker in key for marker in _ENCRYPTED_MARKERS):
        return None, [("upstream.tls.client_key_file", _encrypted(key_name))]
    try:
        load_pem_private_key(key, password=None)
    except TypeError:  # encrypted, in a form the markers above do not show
        return None, [("upstream.tls.client_key_file", _encrypted(key_name))]
    except (ValueError, UnsupportedAlgorithm):
        return None, [("upstream.tls.client_key_file", f"{key_name}: not a PEM private key")]
    try:
        with _in_memory(cert) as cert_file, _in_memory(key) as key_file:
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _Encrypted:
        return None, [("upstream.tls.client_key_file", _encrypted(key_name))]
    except ssl.SSLError as exc:
        return None, [
            (
                "upstream.tls.client_key_file",
                f"{key_name}: cannot be used with {cert_at} ({exc.reason or exc}): the key "
                "does not match the certificate",
            )
        ]
    return ours, []


def utc_text(instant: datetime) -> str:
    """An instant as `2026-12-03T11:38:21Z`: certificates' times are UTC, whatever the
    gateway's time zone."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_left(end: datetime, now: datetime) -> str:
    left = end - now
    return "within a day" if left.days == 0 else f"in {left.days} day(s)"


def tls_warnings(tls: PartnerTls, now: datetime, notice: timedelta) -> Found:
    """The certificates of `tls` that are not valid at `now`, or stop being so within
    `notice`, by key path."""
    found: Found = []
    ours = tls.client_certificate
    if ours is not None:
        refused = "the partner will refuse every share (502 upstream_error)"
        # Ours, issued by a CA the partner trusts (often the partner's own): not the partner's.
        renew = "install a renewed certificate (from the CA the partner trusts) and its key"
        name = tls.client_cert_file
        if ours.not_before > now:
            found.append(
                (
                    CLIENT_CERT_PATH,
                    f"{name}: our client certificate is not valid until "
                    f"{utc_text(ours.not_before)}: {refused} until then",
                )
            )
        elif ours.not_after <= now:
            found.append(
                (
                    CLIENT_CERT_PATH,
                    f"{name}: our client certificate expired on {utc_text(ours.not_after)}: "
                    f"{refused}; {renew}, and reload",
                )
            )
        elif ours.not_after - now <= notice:
            found.append(
                (
                    CLIENT_CERT_PATH,
                    f"{name}: our client certificate expires on {utc_text(ours.not_after)}, "
                    f"{_time_left(ours.not_after, now)}: from then {refused}; {renew}, and "
                    "reload, in time",
                )
            )
    # A partner certificate issued by one still valid verifies, unless none is: then no share
    # can.
    none_valid = bool(tls.ca) and not any(ca.not_before <= now < ca.not_after for ca in tls.ca)
    for ca in tls.ca:
        what = f"{tls.ca_file}: the CA certificate {ca.subject}"
        issued = "a partner certificate it issued"
        fails = (
            "no certificate in the file is valid: every share fails (502 upstream_error)"
            if none_valid
            else f"{issued} does not verify, and its shares fail (502 upstream_error)"
        )
        if ca.not_before > now:
            found.append((CA_PATH, f"{what} is not valid until {utc_text(ca.not_before)}: {fails}"))
        elif ca.not_after <= now:
            found.append((CA_PATH, f"{what} expired on {utc_text(ca.not_after)}: {fails}"))
        elif ca.not_after - now <= notice:
            found.append(
                (
                    CA_PATH,
                    f"{what} expires on {utc_text(ca.not_after)}, "
                    f"{_time_left(ca.not_after, now)}: from then {issued} no longer verifies "
                    "(502 upstream_error); ask the partner for the CA that replaces it",
                )
            )
    return found


def tls_notices(tls: PartnerTls) -> Found:
    """What cryptography warned of as it read the certificates of `tls`, by key path: of the
    files, not of the time, so for a contract of any status."""
    found: Found = []
    ours = tls.client_certificate
    if ours is not None:
        what = f"{tls.client_cert_file}: our client certificate {ours.subject}"
        found += [(CLIENT_CERT_PATH, library_notice(what, notice)) for notice in ours.notices]
    for ca in tls.ca:
        what = f"{tls.ca_file}: the CA certificate {ca.subject}"
        found += [(CA_PATH, library_notice(what, notice)) for notice in ca.notices]
    return found


def library_notice(what: str, notice: str) -> str:
    """`what` (a file and certificate) with a notice of cryptography's: it is no refusal."""
    return f"{what}: cryptography warns: {notice} (OpenSSL accepts it, and the gateway uses it)"


def partner_certificate_notice(
    certificate: CertificateInfo, now: datetime, notice: timedelta
) -> str | None:
    """What to say of a partner's own certificate that has ended or ends within `notice` of
    `now`; None when it holds longer. The partner renews it, not us."""
    end = certificate.not_after
    if end <= now:
        return (
            f"the partner's certificate expired on {utc_text(end)}: every share fails "
            "(502 upstream_error) until the partner installs a renewed one"
        )
    if end - now <= notice:
        return (
            f"the partner's certificate expires on {utc_text(end)}, {_time_left(end, now)}: "
            "from then every share fails (502 upstream_error) unless the partner renews it; "
            "ask it in time"
        )
    return None


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
