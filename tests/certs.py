"""Test certificates: a private certificate authority that issues partner and client
certificates, and self-signed ones, as PEM. Keys are EC P-256: generated in a millisecond, still
build them once per session in a fixture where a test module uses many."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey
    subject: str  # the certificate's common name

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def encrypted_key_pem(self, password: bytes) -> bytes:
        return _key_pem(self.key, password)

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """`<stem>.pem` and `<stem>.key` in `folder`."""
        cert, key = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _name(common_name: str, country: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if country is not None:
        # Any length, as real CAs have issued (`C=USA`): cryptography builds such a name only
        # unchecked, warning as it does; the certificate is what the tests are about.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            odd = x509.NameAttribute(NameOID.COUNTRY_NAME, country, _validate=False)
        attributes.insert(0, odd)
    return x509.Name(attributes)


# A certificate's validity: from `not_before` to `not_after`, instants; None for either, five
# minutes ago and two hours from now.
Validity = tuple[datetime.datetime | None, datetime.datetime | None]
NOW_ISH: Validity = (None, None)


def _builder(
    subject: str,
    issuer: str,
    key: ec.EllipticCurvePrivateKey,
    validity: Validity = NOW_ISH,
    countries: tuple[str | None, str | None] = (None, None),
) -> x509.CertificateBuilder:
    """`countries`: the subject's and the issuer's, or None for a name without one."""
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = validity
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject, countries[0]))
        .issuer_name(_name(issuer, countries[1]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5) if not_before is None else not_before)
        .not_valid_after(now + datetime.timedelta(hours=2) if not_after is None else not_after)
    )


def _server_names(dns_name: str | None) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
    if dns_name is not None:
        names.append(x509.DNSName(dns_name))
    return x509.SubjectAlternativeName(names)


def self_signed(folder: Path, dns_name: str | None = None) -> tuple[Path, Path]:
    """A partner's self-signed certificate for 127.0.0.1 (and `dns_name`), written to
    `partner.pem` and `partner.key` in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(LOOPBACK, LOOPBACK, key)
        .add_extension(_server_names(dns_name), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key, LOOPBACK).write(
        folder, "partner"
    )


class Authority:
    """A private certificate authority, as a partner runs for its servers and its callers."""

    def __init__(self, name: str, validity: Validity = NOW_ISH, country: str | None = None) -> None:
        self.name = name
        self.country = country
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = (
            _builder(name, name, self._key, validity, (country, country))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        common_name: str,
        *extensions: x509.ExtensionType,
        validity: Validity = NOW_ISH,
        key: ec.EllipticCurvePrivateKey | None = None,
        country: str | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1()) if key is None else key
        countries = (country, self.country)
        builder = _builder(common_name, self.name, key, validity, countries).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), key, common_name)

    def server(
        self, dns_name: str | None = None, validity: Validity = NOW_ISH, country: str | None = None
    ) -> Issued:
        """A server certificate for 127.0.0.1 (and `dns_name`)."""
        return self._issue(
            LOOPBACK,
            _server_names(dns_name),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            validity=validity,
            country=country,
        )

    def client(
        self, common_name: str, validity: Validity = NOW_ISH, country: str | None = None
    ) -> Issued:
        """A client certificate, as a partner issues one to each caller it lets in."""
        return self._issue(
            common_name,
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
            validity=validity,
            country=country,
        )

    def renewed(self, client: Issued) -> Issued:
        """`client`'s certificate issued anew for the same key, as a partner renews one from
        the caller's standing request: another serial, the same subject and key."""
        return self._issue(
            client.subject,
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
            key=client.key,
        )


def _element(der: bytes, at: int) -> tuple[int, int]:
    """Where the content of the DER element at `at` starts and where the element ends."""
    length, start = der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(der[start : start + count], "big"), start + count
    return start, start + length


def _elements(der: bytes) -> list[bytes]:
    """The elements of the DER sequence `der`."""
    at, end = _element(der, 0)
    found = []
    while at < end:
        found.append(der[at : _element(der, at)[1]])
        at = _element(der, at)[1]
    return found


def _sequence(elements: list[bytes]) -> bytes:
    content = b"".join(elements)
    size = len(content)
    if size < 0x80:
        return bytes([0x30, size]) + content
    digits = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x30, 0x80 | len(digits)]) + digits + content


def with_dates_without_seconds(cert_pem: bytes) -> bytes:
    """`cert_pem` with its notBefore written without seconds (`YYMMDDHHMMZ`): a form OpenSSL
    reads and cryptography refuses. The signature no longer matches, which a trust store does
    not check of its own CAs."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    certificate = _elements(der)
    tbs = _elements(certificate[0])
    not_before, not_after = _elements(tbs[4])
    short = not_before[2:12] + b"Z"
    tbs[4] = _sequence([bytes([0x17, len(short)]) + short, not_after])
    certificate[0] = _sequence(tbs)
    body = base64.encodebytes(_sequence(certificate)).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n".encode()
