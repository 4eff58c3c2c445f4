"""`upstream.tls`: a partner's own CA and the gateway's client certificate (mutual TLS), from
the contract's files to what the partner saw."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from certs import Authority, Issued, with_dates_without_seconds
from conftest import BASE_CONTRACT, GatewayFactory, contract, stopped_clock
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from partners import TlsPartner
from structlog.testing import capture_logs

from gateway import cli
from gateway import ops as ops_module
from gateway.contractset import load_contract_set
from gateway.partnertls import (
    MAX_TLS_FILE_BYTES,
    CertificateInfo,
    PartnerTls,
    read_certificates,
)
from gateway.settings import Settings
from gateway.upstream import _Broken, _Connection

APPLICANT = {
    "applicant": {"user_id": "u-1", "name": "Zhang San", "religion": "none"},
    "loan_amount": 5000,
}


@pytest.fixture(scope="session")
def partner_ca() -> Authority:
    return Authority("Partner CA")


@pytest.fixture(scope="session")
def our_ca() -> Authority:
    """The CA the partner issued the gateway's client certificates from."""
    return Authority("Partner client CA")


@pytest.fixture(scope="session")
def one(our_ca: Authority) -> Issued:
    return our_ca.client("gateway-one")


@pytest.fixture(scope="session")
def two(our_ca: Authority) -> Issued:
    return our_ca.client("gateway-two")


@pytest.fixture(scope="session")
def stranger() -> Authority:
    return Authority("Someone else's CA")


@pytest.fixture
async def partner(
    request: pytest.FixtureRequest, partner_ca: Authority, our_ca: Authority
) -> AsyncIterator[TlsPartner]:
    """A partner that lets in only callers with a certificate from `our_ca`; over TLS 1.3
    unless a test's `indirect` parameter names the highest version it speaks."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.maximum_version = getattr(request, "param", ssl.TLSVersion.MAXIMUM_SUPPORTED)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=our_ca.cert_pem.decode())
    served = partner_ca.server()
    with _files(served.cert_pem, served.key_pem) as (cert, key):
        context.load_cert_chain(cert, key)
    fake = await TlsPartner(context).start()
    yield fake
    await fake.close()


class _files:
    """Two PEM files for `load_cert_chain`, which reads only files."""

    def __init__(self, cert: bytes, key: bytes) -> None:
        self._folder = tempfile.TemporaryDirectory()
        self.paths = (Path(self._folder.name) / "c.pem", Path(self._folder.name) / "k.pem")
        self.paths[0].write_bytes(cert)
        self.paths[1].write_bytes(key)

    def __enter__(self) -> tuple[Path, Path]:
        return self.paths

    def __exit__(self, *_: object) -> None:
        self._folder.cleanup()


def with_tls(partner_id: str = "acme", **tls: str) -> dict[str, Any]:
    doc = contract(upstream={"tls": tls})
    if partner_id != "acme":
        doc["partner"] = {**doc["partner"], "id": partner_id}
    return doc


def pem_files(partner_ca: Authority, client: Issued | None = None) -> dict[str, bytes]:
    files = {"partner-ca.pem": partner_ca.cert_pem}
    if client is not None:
        files |= {f"{client.subject}.pem": client.cert_pem, f"{client.subject}.key": client.key_pem}
    return files


def client_tls(client: Issued) -> dict[str, str]:
    return {
        "ca_file": "partner-ca.pem",
        "client_cert_file": f"{client.subject}.pem",
        "client_key_file": f"{client.subject}.key",
    }


# --- sharing over mutual TLS --------------------------------------------------------------------


async def test_a_share_reaches_the_partner_with_our_certificate(
    make_gateway: GatewayFactory, partner: TlsPartner, partner_ca: Authority, one: Issued
) -> None:
    gw = await make_gateway([with_tls(**client_tls(one))], files=pem_files(partner_ca, one))
    response = await gw.share("POST", "/acme/v1/assess", json=APPLICANT)
    assert response.status == 200, await response.text()
    # The partner saw the filtered document (religion is in no field rule), and our certificate.
    assert [r.json() for r in partner.received] == [
        {"applicant": {"name": "Zhang San"}, "loan_amount": 5000}
    ]
    assert partner.subjects == ["gateway-one"]
    assert gw.log.outcomes[-1].outcome == "delivered"


async def test_without_memfd_create_our_key_is_copied_to_a_private_file_removed_at_once(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on macOS: no anonymous file to hand OpenSSL the bytes that were read and checked.
    monkeypatch.delattr(os, "memfd_create", raising=False)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    real_open = os.open
    modes: list[int] = []

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if flags & os.O_CREAT and str(path).startswith(str(temporary)):
            modes.append(mode)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    gw = await make_gateway([with_tls(**client_tls(one))], files=pem_files(partner_ca, one))
    assert modes == [0o600, 0o600]  # the certificate's copy and the key's
    assert list(temporary.iterdir()) == []
    response = await gw.share("POST", "/acme/v1/assess", json=APPLICANT)
    assert response.status == 200, await response.text()
    assert partner.subjects == ["gateway-one"]


@pytest.mark.parametrize(
    ("partner", "message"),
    [
        # The request was written before the refusal came; its alert says none of it was read.
        (
            ssl.TLSVersion.TLSv1_3,
            "the partner refused the TLS handshake (TLSV13_ALERT_CERTIFICATE_REQUIRED)",
        ),
        # The refusal ends the connecting.
        (
            ssl.TLSVersion.TLSv1_2,
            "the TLS handshake with the partner failed (SSLV3_ALERT_HANDSHAKE_FAILURE)",
        ),
    ],
    indirect=["partner"],
    ids=["tls1.3", "tls1.2"],
)
async def test_without_our_certificate_the_partner_refuses_and_gets_nothing(
    make_gateway: GatewayFactory, partner: TlsPartner, partner_ca: Authority, message: str
) -> None:
    gw = await make_gateway([with_tls(ca_file="partner-ca.pem")], files=pem_files(partner_ca))
    response = await gw.share("POST", "/acme/v1/assess", json=APPLICANT)
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (502, "upstream_error")
    assert body["error"]["message"] == message
    # The partner read none of the request, and the record says so.
    assert gw.log.outcome_of(body["error"]["share_id"]).outcome == "error"  # type: ignore[union-attr]
    assert (partner.refused, partner.bytes_read, partner.received) == (1, 0, [])


async def test_a_partner_whose_certificate_is_not_from_its_ca_file_gets_nothing(
    make_gateway: GatewayFactory, partner: TlsPartner, stranger: Authority, one: Issued
) -> None:
    tls = client_tls(one)
    gw = await make_gateway([with_tls(**tls)], files=pem_files(stranger, one))
    with capture_logs() as logs:
        response = await gw.share("POST", "/acme/v1/assess", json=APPLICANT)
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (502, "upstream_error")
    # Said as what it is: a ca_file that did not issue the partner's certificate fails every
    # share, and "could not be reached" would send the operator to the network.
    message = "the partner's certificate did not verify (unable to get local issuer certificate)"
    assert body["error"]["message"] == message
    # The operator reads it too, beside the outcome, not only the caller.
    failed = [entry for entry in logs if entry["event"] == "upstream_failed"]
    assert failed == [
        {
            "event": "upstream_failed",
            "log_level": "warning",
            "share_id": body["error"]["share_id"],
            "partner": "acme",
            "reason": "error",
            "message": message,
        }
    ]
    assert gw.log.outcome_of(body["error"]["share_id"]).outcome == "error"  # type: ignore[union-attr]
    assert (partner.bytes_read, partner.received, partner.subjects) == (0, [], [])


async def test_two_contracts_to_one_origin_each_present_their_own_certificate(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    two: Issued,
) -> None:
    files = pem_files(partner_ca, one) | pem_files(partner_ca, two)
    gw = await make_gateway(
        [with_tls("acme", **client_tls(one)), with_tls("acme2", **client_tls(two))], files=files
    )
    for partner_id in ("acme", "acme2", "acme", "acme2"):
        response = await gw.share(
            "POST", f"/{partner_id}/v1/assess", json=APPLICANT, scope=f"share:{partner_id}:*"
        )
        assert response.status == 200
    # One connection each, kept alive: never the other contract's.
    assert partner.subjects == ["gateway-one", "gateway-two"]
    assert len(partner.received) == 4


async def test_a_reload_that_swaps_the_certificate_is_seen_by_the_next_share(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    two: Issued,
) -> None:
    gw = await make_gateway([with_tls(**client_tls(one))], files=pem_files(partner_ca, one))
    assert (await gw.share("POST", "/acme/v1/assess", json=APPLICANT)).status == 200
    folder = gw.runtime.settings.contracts_dir
    # The same file names, new contents: only the files changed, not the contract.
    (folder / "gateway-one.pem").write_bytes(two.cert_pem)
    (folder / "gateway-one.key").write_bytes(two.key_pem)
    await gw.runtime.reload()
    assert (await gw.share("POST", "/acme/v1/assess", json=APPLICANT)).status == 200
    assert partner.subjects == ["gateway-one", "gateway-two"]
    # A reload that changes nothing keeps the connection.
    await gw.runtime.reload()
    assert (await gw.share("POST", "/acme/v1/assess", json=APPLICANT)).status == 200
    assert partner.subjects == ["gateway-one", "gateway-two"]


@pytest.mark.parametrize("changed", ["certificate", "ca_file"])
async def test_a_reload_that_changes_one_file_connects_anew(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    partner_ca: Authority,
    our_ca: Authority,
    stranger: Authority,
    one: Issued,
    changed: str,
) -> None:
    files = pem_files(partner_ca, one)
    files["partner-ca.pem"] = partner_ca.cert_pem + stranger.cert_pem
    gw = await make_gateway([with_tls(**client_tls(one))], files=files)
    assert (await gw.share("POST", "/acme/v1/assess", json=APPLICANT)).status == 200
    folder = gw.runtime.settings.contracts_dir
    if changed == "certificate":
        # Renewed for the same key: the key file is left as it was.
        (folder / "gateway-one.pem").write_bytes(our_ca.renewed(one).cert_pem)
    else:
        # A CA no longer trusted: the kept connection was verified with it in the bundle.
        (folder / "partner-ca.pem").write_bytes(partner_ca.cert_pem)
    await gw.runtime.reload()
    assert (await gw.share("POST", "/acme/v1/assess", json=APPLICANT)).status == 200
    # A second handshake: the connection made with the old files carried no share.
    assert partner.subjects == ["gateway-one", "gateway-one"]
    assert len(partner.received) == 2


@pytest.mark.parametrize("presented", ["from another CA", "expired"])
async def test_a_partner_that_refuses_our_certificate_reads_nothing_and_the_record_says_so(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    partner_ca: Authority,
    our_ca: Authority,
    stranger: Authority,
    presented: str,
) -> None:
    now = datetime.now(UTC)
    ours = (
        stranger.client("gateway-one")
        if presented == "from another CA"
        else our_ca.client("gateway-one", (now - timedelta(days=300), now - timedelta(days=1)))
    )
    gw = await make_gateway([with_tls(**client_tls(ours))], files=pem_files(partner_ca, ours))
    response = await gw.share("POST", "/acme/v1/assess", json=APPLICANT)
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (502, "upstream_error")
    assert gw.log.outcome_of(body["error"]["share_id"]).outcome == "error"  # type: ignore[union-attr]
    assert (partner.refused, partner.bytes_read, partner.received) == (1, 0, [])


# --- what the loader refuses -------------------------------------------------------------------


def _load(
    tmp_path: Path, upstream: dict[str, Any], files: dict[str, bytes] | None = None
) -> list[str]:
    folder = tmp_path / "contracts"
    folder.mkdir(exist_ok=True)
    doc = contract(upstream={"base_url": "https://api.acme.example", **upstream})
    (folder / "acme.yaml").write_text(yaml.safe_dump(doc))
    for name, content in (files or {}).items():
        (folder / name).write_bytes(content)
    settings = Settings(contracts_dir=folder, allow_insecure_upstreams=True)
    loaded, problems = load_contract_set(folder, settings)
    assert (loaded is None) == bool(problems)
    prefix = f"{folder / 'acme.yaml'}: "
    return [str(problem).removeprefix(prefix) for problem in problems]


def test_relative_paths_are_read_from_the_contracts_folder(
    tmp_path: Path, partner_ca: Authority, one: Issued
) -> None:
    assert _load(tmp_path, {"tls": client_tls(one)}, pem_files(partner_ca, one)) == []
    folder = tmp_path / "contracts"
    loaded, _ = load_contract_set(folder, Settings(contracts_dir=folder))
    assert loaded is not None
    tls = loaded.contracts["acme"].tls
    assert tls is not None
    assert tls.context.verify_mode == ssl.CERT_REQUIRED
    assert tls.context.check_hostname
    assert tls.context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Only the partner's CA, none of the system's.
    assert [c["subject"] for c in tls.context.get_ca_certs()] == [
        ((("commonName", "Partner CA"),),)
    ]


def _loaded_tls(folder: Path) -> PartnerTls:
    loaded, problems = load_contract_set(folder, Settings(contracts_dir=folder))
    assert problems == []
    assert loaded is not None
    tls = loaded.contracts["acme"].tls
    assert tls is not None
    return tls


def test_without_a_ca_file_the_partner_is_still_verified_by_name(
    tmp_path: Path, one: Issued
) -> None:
    files = {"gateway-one.pem": one.cert_pem, "gateway-one.key": one.key_pem}
    tls = {"client_cert_file": "gateway-one.pem", "client_key_file": "gateway-one.key"}
    assert _load(tmp_path, {"tls": tls}, files) == []
    context = _loaded_tls(tmp_path / "contracts").context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_our_certificate_is_the_first_of_a_file_that_carries_its_chain(
    tmp_path: Path, our_ca: Authority, one: Issued
) -> None:
    files = {"gateway-one.pem": one.cert_pem + our_ca.cert_pem, "gateway-one.key": one.key_pem}
    tls = {"client_cert_file": "gateway-one.pem", "client_key_file": "gateway-one.key"}
    assert _load(tmp_path, {"tls": tls}, files) == []
    ours = _loaded_tls(tmp_path / "contracts").client_certificate
    assert ours is not None
    assert (ours.subject, ours.issuer) == ("CN=gateway-one", "CN=Partner client CA")


def test_a_ca_bundle_with_comments_in_utf_8_is_read(
    tmp_path: Path, partner_ca: Authority, stranger: Authority
) -> None:
    # As some systems' bundles are written: each certificate under its label, in UTF-8.
    bundle = (
        "# Partner CA — Zürich\n".encode() + partner_ca.cert_pem + "# Főtanúsítvány\n".encode()
    ) + stranger.cert_pem
    files = {"partner-ca.pem": bundle}
    assert _load(tmp_path, {"tls": {"ca_file": "partner-ca.pem"}}, files) == []
    context = _loaded_tls(tmp_path / "contracts").context
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "Partner CA"),),),
        ((("commonName", "Someone else's CA"),),),
    ]


def test_the_cas_warned_of_and_listed_are_those_openssl_took_from_the_bundle(
    tmp_path: Path, partner_ca: Authority, stranger: Authority
) -> None:
    # A byte-order mark before the first block, as some editors save a file: OpenSSL skips
    # that block and trusts the second alone. Its end would fail no share: never warned of.
    bundle = b"\xef\xbb\xbf" + partner_ca.cert_pem + stranger.cert_pem
    assert _load(tmp_path, {"tls": {"ca_file": "partner-ca.pem"}}, {"partner-ca.pem": bundle}) == []
    loaded = _loaded_tls(tmp_path / "contracts")
    assert [c["subject"] for c in loaded.context.get_ca_certs()] == [
        ((("commonName", "Someone else's CA"),),)
    ]
    assert [ca.subject for ca in loaded.ca] == ["CN=Someone else's CA"]


@pytest.mark.parametrize("damage", ["cut short", "indented", "not ASCII within"])
def test_a_ca_bundle_openssl_cannot_read_whole_is_refused(
    tmp_path: Path, partner_ca: Authority, stranger: Authority, damage: str
) -> None:
    # Indented, as pasted from a YAML file: OpenSSL sees no block, and the file trusts nothing.
    pem = partner_ca.cert_pem
    bundle = {
        "cut short": pem + stranger.cert_pem[:200],
        "indented": pem.replace(b"-----", b"  -----", 1).replace(b"\n", b"\n  "),
        "not ASCII within": pem[:60] + "é".encode() + pem[60:],
    }[damage]
    files = {"partner-ca.pem": bundle}
    assert _load(tmp_path, {"tls": {"ca_file": "partner-ca.pem"}}, files) == [
        "upstream.tls.ca_file: partner-ca.pem: holds no certificate OpenSSL can read"
    ]


def test_a_ca_whose_dates_cannot_be_read_is_refused_rather_than_never_warned_of(
    tmp_path: Path, partner_ca: Authority
) -> None:
    files = {"partner-ca.pem": with_dates_without_seconds(partner_ca.cert_pem)}
    assert _load(tmp_path, {"tls": {"ca_file": "partner-ca.pem"}}, files) == [
        "upstream.tls.ca_file: partner-ca.pem: holds a certificate whose validity dates cannot "
        "be read"
    ]


def test_a_base_url_with_its_scheme_in_capitals_takes_a_tls_section(
    tmp_path: Path, partner_ca: Authority
) -> None:
    upstream = {"base_url": "HTTPS://api.acme.example", "tls": {"ca_file": "partner-ca.pem"}}
    assert _load(tmp_path, upstream, pem_files(partner_ca)) == []


def test_a_file_over_a_mebibyte_is_not_read(tmp_path: Path, partner_ca: Authority) -> None:
    padding = b"#" * (MAX_TLS_FILE_BYTES + 1 - len(partner_ca.cert_pem))
    files = {"partner-ca.pem": partner_ca.cert_pem + padding}
    assert _load(tmp_path, {"tls": {"ca_file": "partner-ca.pem"}}, files) == [
        "upstream.tls.ca_file: partner-ca.pem: larger than 1048576 bytes (1 MiB): a CA bundle, "
        "certificate or key is a few KB"
    ]


@pytest.mark.parametrize("field", ["ca_file", "client_cert_file", "client_key_file"])
def test_a_blank_file_name_is_refused(tmp_path: Path, field: str) -> None:
    tls = {"ca_file": "ca.pem", "client_cert_file": "c.pem", "client_key_file": "c.key"}
    assert _load(tmp_path, {"tls": {**tls, field: " "}}) == [
        f"upstream.tls.{field}: must not be empty"
    ]


def test_the_files_are_read_from_the_version_of_the_folder_the_contract_came_from(
    tmp_path: Path, partner_ca: Authority, stranger: Authority
) -> None:
    # A ConfigMap mount: each version in its own folder, `..data` leading to the current one.
    folder = tmp_path / "contracts"
    version = folder / "..2026_12_03"
    version.mkdir(parents=True)
    doc = contract(
        upstream={"base_url": "https://api.acme.example", "tls": {"ca_file": "partner-ca.pem"}}
    )
    (version / "acme.yaml").write_text(yaml.safe_dump(doc))
    (version / "partner-ca.pem").write_bytes(partner_ca.cert_pem)
    (folder / "..data").symlink_to(version.name)
    (folder / "acme.yaml").symlink_to("..data/acme.yaml")
    # Left at the top by an older layout: not the version the contract was read from.
    (folder / "partner-ca.pem").write_bytes(stranger.cert_pem)
    assert [ca.subject for ca in _loaded_tls(folder).ca] == ["CN=Partner CA"]


def test_a_load_leaves_no_copy_of_a_key_open(
    tmp_path: Path, partner_ca: Authority, one: Issued
) -> None:
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd to list open files with")
    for _ in range(2):  # a reload too
        assert _load(tmp_path, {"tls": client_tls(one)}, pem_files(partner_ca, one)) == []
    opened = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            opened.append(os.readlink(fd))
    assert [name for name in opened if "partner-tls" in name] == []


def test_no_child_process_inherits_the_copy_of_a_key_a_load_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partner_ca: Authority, one: Issued
) -> None:
    if not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create: the copy is a file only the gateway's user may read")
    real = os.memfd_create
    inheritable: list[bool] = []

    def memfd_create(name: str, flags: int = os.MFD_CLOEXEC) -> int:
        fd = real(name, flags)
        inheritable.append(os.get_inheritable(fd))
        return fd

    monkeypatch.setattr(os, "memfd_create", memfd_create)
    assert _load(tmp_path, {"tls": client_tls(one)}, pem_files(partner_ca, one)) == []
    assert inheritable == [False, False]  # the certificate's copy and the key's


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        (
            {"base_url": "http://api.acme.example", "tls": {"ca_file": "partner-ca.pem"}},
            "upstream.tls: only for an https:// base_url: plain HTTP has no TLS",
        ),
        (
            {"tls": {}},
            "upstream.tls: empty: name ca_file and/or client_cert_file with client_key_file, "
            "or remove the section",
        ),
        (
            {"tls": None},
            "upstream.tls: empty: name ca_file and/or client_cert_file, or remove the key",
        ),
        (
            {"tls": {"client_cert_file": "gateway-one.pem"}},
            "upstream.tls.client_key_file: required with client_cert_file",
        ),
        (
            {"tls": {"client_key_file": "gateway-one.key"}},
            "upstream.tls.client_cert_file: required with client_key_file",
        ),
        (
            {"tls": {"client_cert_file": "absent.pem"}},
            "upstream.tls.client_key_file: required with client_cert_file",
        ),
        (
            {"tls": {"ca_file": "missing.pem"}},
            "upstream.tls.ca_file: missing.pem: cannot read: No such file or directory",
        ),
        (
            {"tls": {"ca_file": "gateway-one.key"}},
            "upstream.tls.ca_file: gateway-one.key: holds no PEM certificate",
        ),
        (
            {"tls": {"client_cert_file": "gateway-one.key", "client_key_file": "gateway-one.key"}},
            "upstream.tls.client_cert_file: gateway-one.key: not a PEM certificate",
        ),
        (
            {"tls": {"client_cert_file": "gateway-one.pem", "client_key_file": "gateway-one.pem"}},
            "upstream.tls.client_key_file: gateway-one.pem: not a PEM private key",
        ),
    ],
    ids=[
        "http",
        "empty",
        "null",
        "cert_alone",
        "key_alone",
        "cert_alone_and_absent",
        "missing",
        "ca_without_cert",
        "cert_not_pem",
        "key_not_pem",
    ],
)
def test_a_tls_section_that_cannot_work_is_refused(
    tmp_path: Path, one: Issued, upstream: dict[str, Any], expected: str
) -> None:
    files = {"gateway-one.pem": one.cert_pem, "gateway-one.key": one.key_pem}
    assert _load(tmp_path, upstream, files) == [expected]


def test_a_key_that_does_not_match_the_certificate_is_refused(
    tmp_path: Path, one: Issued, two: Issued
) -> None:
    files = {"gateway-one.pem": one.cert_pem, "gateway-two.key": two.key_pem}
    tls = {"client_cert_file": "gateway-one.pem", "client_key_file": "gateway-two.key"}
    (problem,) = _load(tmp_path, {"tls": tls}, files)
    assert problem.startswith("upstream.tls.client_key_file: gateway-two.key: cannot be used with")
    assert problem.endswith("the key does not match the certificate")


def test_an_encrypted_key_is_refused_as_it_has_no_place_for_its_passphrase(
    tmp_path: Path, one: Issued
) -> None:
    files = {"gateway-one.pem": one.cert_pem, "locked.key": one.encrypted_key_pem(b"secret")}
    tls = {"client_cert_file": "gateway-one.pem", "client_key_file": "locked.key"}
    (problem,) = _load(tmp_path, {"tls": tls}, files)
    assert problem.startswith(
        "upstream.tls.client_key_file: locked.key: the private key is encrypted, and a "
        "contract has no place for its passphrase"
    )


def test_a_fifo_is_never_opened_for_reading(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "contracts"
    folder.mkdir()
    os.mkfifo(folder / "partner-ca.pem")
    assert _load(tmp_path, {"tls": {"ca_file": "partner-ca.pem"}}) == [
        "upstream.tls.ca_file: partner-ca.pem: not a regular file but a FIFO: nothing was read"
    ]


def test_contracts_validate_reports_a_tls_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    doc = {**BASE_CONTRACT, "upstream": {**BASE_CONTRACT["upstream"], "tls": {}}}
    doc["upstream"]["base_url"] = "https://api.acme.example"
    (folder / "acme.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["contracts", "validate", str(folder)]) == 1
    assert capsys.readouterr().out == (
        f"{folder / 'acme.yaml'}: upstream.tls: empty: name ca_file and/or client_cert_file "
        "with client_key_file, or remove the section\n"
    )


# --- which alerts say the partner read nothing -------------------------------------------------


class _Transport(asyncio.Transport):
    """The transport side of a finished handshake, as `_Connection` sees it."""

    def __init__(self, context: ssl.SSLContext, tls: ssl.SSLObject) -> None:
        super().__init__({"sslcontext": context, "ssl_object": tls})
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _handshake(
    partner_ca: Authority, version: ssl.TLSVersion
) -> tuple[ssl.SSLContext, ssl.SSLObject]:
    """The client's side of a whole handshake at `version`, done in memory."""
    served = partner_ca.server()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _files(served.cert_pem, served.key_pem) as (cert, key):
        server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cadata=partner_ca.cert_pem.decode())
    client_context.maximum_version = version
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname="127.0.0.1")
    into_server, out_of_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(into_server, out_of_server, server_side=True)
    done: set[str] = set()
    while done != {"client", "server"}:
        for name, side in (("client", client), ("server", server)):
            if name not in done:
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
                    done.add(name)
        into_server.write(to_server.read())
        to_client.write(out_of_server.read())
    assert client.version() == ("TLSv1.3" if version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2")
    return client_context, client


@pytest.mark.parametrize(
    ("version", "refused"),
    [(ssl.TLSVersion.TLSv1_3, True), (ssl.TLSVersion.TLSv1_2, False)],
    ids=["tls1.3", "tls1.2"],
)
async def test_only_a_tls_1_3_certificate_alert_before_any_answer_says_nothing_was_read(
    partner_ca: Authority, version: ssl.TLSVersion, refused: bool
) -> None:
    # Under TLS 1.2 the partner checks our certificate before our handshake ends; an alert
    # after it is a renegotiation, which a server asks for once it has read the request.
    context, tls = _handshake(partner_ca, version)
    connection = _Connection(asyncio.get_running_loop(), lambda: None)
    connection.connection_made(_Transport(context, tls))
    waiter = connection.send(b"POST /v1/assess HTTP/1.1\r\n\r\n", 1024)
    alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    alert.reason = "SSLV3_ALERT_BAD_CERTIFICATE"
    connection.connection_lost(alert)
    broken = waiter.exception()
    assert isinstance(broken, _Broken)
    assert broken.refused is refused


def _alert(reason: str) -> ssl.SSLError:
    alert = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    alert.reason = reason
    return alert


async def test_a_tls_1_3_error_that_is_not_a_certificate_alert_may_follow_a_read_request(
    partner_ca: Authority,
) -> None:
    context, tls = _handshake(partner_ca, ssl.TLSVersion.TLSv1_3)
    connection = _Connection(asyncio.get_running_loop(), lambda: None)
    connection.connection_made(_Transport(context, tls))
    waiter = connection.send(b"POST /v1/assess HTTP/1.1\r\n\r\n", 1024)
    connection.connection_lost(_alert("DECRYPTION_FAILED_OR_BAD_RECORD_MAC"))
    broken = waiter.exception()
    assert isinstance(broken, _Broken)
    assert broken.refused is False


async def test_a_certificate_alert_after_an_answer_is_no_refusal_of_the_next_request(
    partner_ca: Authority,
) -> None:
    # The partner took this connection's first request: its handshake was over.
    context, tls = _handshake(partner_ca, ssl.TLSVersion.TLSv1_3)
    connection = _Connection(asyncio.get_running_loop(), lambda: None)
    connection.connection_made(_Transport(context, tls))
    first = connection.send(b"POST /v1/assess HTTP/1.1\r\n\r\n", 1024)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert (await first).status == 200
    second = connection.send(b"POST /v1/assess HTTP/1.1\r\n\r\n", 1024)
    connection.connection_lost(_alert("SSLV3_ALERT_BAD_CERTIFICATE"))
    broken = second.exception()
    assert isinstance(broken, _Broken)
    assert broken.refused is False


# --- certificate warnings ----------------------------------------------------------------------

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def days(n: int) -> datetime:
    return NOW + timedelta(days=n)


def _tls_warnings(
    tmp_path: Path,
    files: dict[str, bytes],
    tls: dict[str, str],
    *,
    status: str = "active",
) -> list[tuple[str, str]]:
    """The `upstream.tls` warnings of a contract naming `tls`, loaded as of NOW."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    doc = contract(upstream={"base_url": "https://api.acme.example", "tls": tls})
    doc["contract"] = {**doc["contract"], "status": status}
    (folder / "acme.yaml").write_text(yaml.safe_dump(doc))
    for name, content in files.items():
        (folder / name).write_bytes(content)
    loaded, problems = load_contract_set(folder, Settings(contracts_dir=folder), now=NOW)
    assert problems == []
    assert loaded is not None
    return [(w.path, w.message) for w in loaded.warnings if w.path.startswith("upstream.tls")]


CLIENT_AT = "upstream.tls.client_cert_file"
CA_AT = "upstream.tls.ca_file"


@pytest.mark.parametrize(
    ("validity", "shown"),
    [
        (
            (days(-300), days(30)),
            "ours.pem: our client certificate expires on 2027-01-02T12:00:00Z, in 30 day(s): "
            "from then the partner will refuse every share (502 upstream_error)",
        ),
        (
            (days(-300), days(-1)),
            "ours.pem: our client certificate expired on 2026-12-02T12:00:00Z: the partner will "
            "refuse every share (502 upstream_error)",
        ),
        (
            (days(2), days(300)),
            "ours.pem: our client certificate is not valid until 2026-12-05T12:00:00Z: the "
            "partner will refuse every share (502 upstream_error) until then",
        ),
        (
            (days(-300), days(1)),
            "ours.pem: our client certificate expires on 2026-12-04T12:00:00Z, in 1 day(s): ",
        ),
        (
            (days(-300), NOW + timedelta(hours=23)),
            "ours.pem: our client certificate expires on 2026-12-04T11:00:00Z, within a day: ",
        ),
        # OpenSSL refuses a certificate from the very second of its `notAfter`.
        (
            (days(-300), NOW),
            "ours.pem: our client certificate expired on 2026-12-03T12:00:00Z: the partner will "
            "refuse every share (502 upstream_error)",
        ),
    ],
    ids=["ends in 30 days", "ended", "not valid yet", "ends in 1 day", "ends in hours", "ends now"],
)
def test_our_client_certificate_is_warned_of_when_it_ends_soon_has_ended_or_has_not_begun(
    tmp_path: Path, validity: tuple[datetime, datetime], shown: str
) -> None:
    authority = Authority("Lasting CA", (days(-300), days(300)))
    ours = authority.client("gateway-dated", validity)
    files = {"ca.pem": authority.cert_pem, "ours.pem": ours.cert_pem, "ours.key": ours.key_pem}
    tls = {"ca_file": "ca.pem", "client_cert_file": "ours.pem", "client_key_file": "ours.key"}
    [(where, message)] = _tls_warnings(tmp_path, files, tls)
    assert where == CLIENT_AT
    assert message.startswith(shown)


@pytest.mark.parametrize(
    ("client", "ca", "status"),
    [
        ((days(-300), days(31)), (days(-300), days(300)), "active"),
        ((days(-300), days(300)), (days(-300), days(31)), "active"),
        ((days(-300), days(-1)), (days(-300), days(-1)), "suspended"),
        ((NOW, days(300)), (days(-300), days(300)), "active"),
        ((days(-300), days(300)), (NOW, days(300)), "active"),
    ],
    ids=[
        "client certificate ends in 31 days",
        "CA ends in 31 days",
        "suspended",
        "client certificate begins now",
        "CA begins now",
    ],
)
def test_certificates_ending_later_or_of_a_contract_not_active_are_not_warned_of(
    tmp_path: Path,
    client: tuple[datetime, datetime],
    ca: tuple[datetime, datetime],
    status: str,
) -> None:
    authority = Authority("Dated CA", ca)
    ours = authority.client("gateway-dated", client)
    files = {"ca.pem": authority.cert_pem, "ours.pem": ours.cert_pem, "ours.key": ours.key_pem}
    tls = {"ca_file": "ca.pem", "client_cert_file": "ours.pem", "client_key_file": "ours.key"}
    assert _tls_warnings(tmp_path, files, tls, status=status) == []


def test_an_expired_ca_in_a_bundle_with_a_valid_one_is_warned_of_alone(tmp_path: Path) -> None:
    old = Authority("Old CA", (days(-400), days(-1)))
    new = Authority("New CA", (days(-10), days(400)))
    files = {"bundle.pem": old.cert_pem + new.cert_pem}
    assert _tls_warnings(tmp_path, files, {"ca_file": "bundle.pem"}) == [
        (
            CA_AT,
            "bundle.pem: the CA certificate CN=Old CA expired on 2026-12-02T12:00:00Z: a partner "
            "certificate it issued does not verify, and its shares fail (502 upstream_error)",
        )
    ]


def test_a_bundle_whose_every_ca_has_expired_fails_every_share(tmp_path: Path) -> None:
    old = Authority("Old CA", (days(-400), days(-1)))
    older = Authority("Older CA", (days(-800), days(-400)))
    files = {"bundle.pem": old.cert_pem + older.cert_pem}
    warnings = _tls_warnings(tmp_path, files, {"ca_file": "bundle.pem"})
    assert [(where, message.split(" expired on ")[0]) for where, message in warnings] == [
        (CA_AT, "bundle.pem: the CA certificate CN=Old CA"),
        (CA_AT, "bundle.pem: the CA certificate CN=Older CA"),
    ]
    for _, message in warnings:
        assert message.endswith(
            ": no certificate in the file is valid: every share fails (502 upstream_error)"
        )


@pytest.mark.parametrize(
    ("validity", "shown"),
    [
        (
            (days(-300), days(30)),
            "ca.pem: the CA certificate CN=Dated CA expires on 2027-01-02T12:00:00Z, in 30 "
            "day(s): from then a partner certificate it issued no longer verifies",
        ),
        (
            (days(1), days(300)),
            "ca.pem: the CA certificate CN=Dated CA is not valid until 2026-12-04T12:00:00Z: no "
            "certificate in the file is valid: every share fails (502 upstream_error)",
        ),
        (
            (days(-300), NOW),
            "ca.pem: the CA certificate CN=Dated CA expired on 2026-12-03T12:00:00Z: no "
            "certificate in the file is valid: every share fails (502 upstream_error)",
        ),
    ],
    ids=["ends in 30 days", "not valid yet", "ends now"],
)
def test_a_ca_ending_soon_ended_or_not_valid_yet_is_warned_of(
    tmp_path: Path, validity: tuple[datetime, datetime], shown: str
) -> None:
    files = {"ca.pem": Authority("Dated CA", validity).cert_pem}
    [(where, message)] = _tls_warnings(tmp_path, files, {"ca_file": "ca.pem"})
    assert where == CA_AT
    assert message.startswith(shown)


def test_contracts_validate_prints_the_certificate_and_start_warnings(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    our_ca: Authority,
) -> None:
    now = datetime.now(UTC)
    ended = our_ca.client("gateway-ended", (now - timedelta(days=300), now - timedelta(days=1)))
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "ended.pem").write_bytes(ended.cert_pem)
    (folder / "ended.key").write_bytes(ended.key_pem)
    starts = now.date() + timedelta(days=10)  # to come in any time zone
    doc = with_tls(client_cert_file="ended.pem", client_key_file="ended.key")
    doc["upstream"]["base_url"] = "https://api.acme.example"
    doc["contract"]["effective"] = starts.isoformat()
    doc["routes"][2]["subject"] = "path.doc_id"  # its upload warns of nothing else
    file = folder / "acme.yaml"
    file.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["contracts", "validate", str(folder)]) == 0
    [start, certificate] = capsys.readouterr().err.splitlines()
    assert start == (
        f"{file}: warning: contract.effective: takes effect on {starts}: every share is "
        "refused until then (403 contract_inactive)"
    )
    end = x509.load_pem_x509_certificate(ended.cert_pem).not_valid_after_utc
    assert certificate == (
        f"{file}: warning: upstream.tls.client_cert_file: ended.pem: our client certificate "
        f"expired on {end:%Y-%m-%dT%H:%M:%SZ}: the partner will refuse every share "
        "(502 upstream_error); install a renewed certificate (from the CA the partner trusts) "
        "and its key, and reload"
    )


# --- certificates cryptography reads with a warning ---------------------------------------------

# cryptography's own message: a country name of three letters, as real CAs have issued.
THREE_LETTERS = "Attribute's length must be >= 2 and <= 2, but it was 3"
USED = "(OpenSSL accepts it, and the gateway uses it)"


def _odd_files() -> tuple[dict[str, bytes], dict[str, str]]:
    """A CA and our client certificate from it, each with `C=USA`, lasting beyond any notice."""
    authority = Authority("Odd CA", (days(-300), days(300)), country="USA")
    ours = authority.client("gateway-odd", (days(-300), days(300)), country="USA")
    files = {"ca.pem": authority.cert_pem, "ours.pem": ours.cert_pem, "ours.key": ours.key_pem}
    tls = {"ca_file": "ca.pem", "client_cert_file": "ours.pem", "client_key_file": "ours.key"}
    return files, tls


@pytest.mark.parametrize("status", ["active", "suspended", "terminated"])
def test_a_certificate_cryptography_warns_of_is_used_and_its_warning_is_a_notice_of_ours(
    tmp_path: Path, status: str
) -> None:
    # A warning escaping the load would fail the test (filterwarnings = error): it is said as
    # the gateway's, naming the file and the certificate, whatever the contract's status.
    files, tls = _odd_files()
    assert _tls_warnings(tmp_path, files, tls, status=status) == [
        (
            CLIENT_AT,
            f"ours.pem: our client certificate CN=gateway-odd,C=USA: cryptography warns: "
            f"{THREE_LETTERS} {USED}",
        ),
        (
            CA_AT,
            f"ca.pem: the CA certificate CN=Odd CA,C=USA: cryptography warns: "
            f"{THREE_LETTERS} {USED}",
        ),
    ]
    loaded = _loaded_tls(tmp_path / "contracts")
    assert [c["subject"] for c in loaded.context.get_ca_certs()] == [
        ((("countryName", "USA"),), (("commonName", "Odd CA"),))
    ]
    assert loaded.client_certificate is not None
    assert loaded.client_certificate.subject == "CN=gateway-odd,C=USA"


def test_a_certificate_near_its_end_that_cryptography_warns_of_has_both_warnings(
    tmp_path: Path,
) -> None:
    authority = Authority("Odd CA", (days(-300), days(10)), country="USA")
    files = {"ca.pem": authority.cert_pem}
    assert _tls_warnings(tmp_path, files, {"ca_file": "ca.pem"}) == [
        (
            CA_AT,
            "ca.pem: the CA certificate CN=Odd CA,C=USA expires on 2026-12-13T12:00:00Z, in 10 "
            "day(s): from then a partner certificate it issued no longer verifies (502 "
            "upstream_error); ask the partner for the CA that replaces it",
        ),
        (
            CA_AT,
            f"ca.pem: the CA certificate CN=Odd CA,C=USA: cryptography warns: {THREE_LETTERS} "
            f"{USED}",
        ),
    ]


def test_each_ca_of_a_bundle_that_cryptography_warns_of_is_named(tmp_path: Path) -> None:
    lasting = (days(-300), days(300))
    plain, odd = Authority("Plain CA", lasting), Authority("Odd CA", lasting, country="USA")
    bundle = plain.cert_pem + odd.cert_pem
    assert _tls_warnings(tmp_path, {"ca.pem": bundle}, {"ca_file": "ca.pem"}) == [
        (
            CA_AT,
            f"ca.pem: the CA certificate CN=Odd CA,C=USA: cryptography warns: {THREE_LETTERS} "
            f"{USED}",
        ),
    ]


def test_a_warning_given_as_a_bundle_loads_is_said_once_with_its_first_certificate() -> None:
    # A warning of the load itself names no certificate: it is said with the first one only,
    # next to what that one's own fields were warned of.
    bundle = Authority("First CA", country="USA").cert_pem + Authority("Second CA").cert_pem

    def load() -> list[x509.Certificate]:
        warnings.warn("the bundle is odd", UserWarning, stacklevel=1)
        return x509.load_pem_x509_certificates(bundle)

    assert [(info.subject, info.notices) for info in read_certificates(load)] == [
        ("CN=First CA,C=USA", ("the bundle is odd", THREE_LETTERS)),
        ("CN=Second CA", ()),
    ]


def test_contracts_validate_prints_cryptographys_warning_as_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files, tls = _odd_files()
    folder = tmp_path / "contracts"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    doc = with_tls(**tls)
    doc["upstream"]["base_url"] = "https://api.acme.example"
    doc["routes"][2]["subject"] = "path.doc_id"  # its upload warns of nothing else
    file = folder / "acme.yaml"
    file.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["contracts", "validate", str(folder)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{file}: warning: upstream.tls.client_cert_file: ours.pem: our client certificate "
        f"CN=gateway-odd,C=USA: cryptography warns: {THREE_LETTERS} {USED}",
        f"{file}: warning: upstream.tls.ca_file: ca.pem: the CA certificate CN=Odd CA,C=USA: "
        f"cryptography warns: {THREE_LETTERS} {USED}",
    ]


# --- what the admin API shows --------------------------------------------------------------------

ADMIN = "gateway:admin"


async def test_the_contracts_listing_shows_the_certificates_and_never_the_key(
    make_gateway: GatewayFactory, partner: TlsPartner, partner_ca: Authority, one: Issued
) -> None:
    plain = contract(partner={"id": "plain", "name": "Plain"})
    # Ours, and the partner's certificate checked against the system's trust store.
    trusting = with_tls(
        "trusting", client_cert_file="gateway-one.pem", client_key_file="gateway-one.key"
    )
    contracts = [with_tls(**client_tls(one)), plain, trusting]
    gw = await make_gateway(contracts, files=pem_files(partner_ca, one))
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get("/_gateway/contracts", headers=admin)
    text = await response.text()
    for line in one.key_pem.decode().splitlines()[1:-1]:
        assert line not in text
    assert "".join(one.key_pem.decode().splitlines()[1:-1]) not in text
    listed = {c["partner"]: c for c in orjson.loads(text)["contracts"]}
    ours = x509.load_pem_x509_certificate(one.cert_pem)
    assert listed["acme"]["tls"] == {
        "ca": ["CN=Partner CA"],
        "client_certificate": {
            "subject": "CN=gateway-one",
            "issuer": "CN=Partner client CA",
            "serial": _whole_bytes(ours.serial_number),
            "not_before": f"{ours.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
            "not_after": f"{ours.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
            "sha256_fingerprint": ours.fingerprint(hashes.SHA256()).hex(":").upper(),
        },
    }
    assert listed["plain"]["tls"] is None
    assert listed["trusting"]["tls"] == {
        "ca": None,
        "client_certificate": listed["acme"]["tls"]["client_certificate"],
    }


def _whole_bytes(serial: int) -> str:
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex().upper()


@pytest.mark.parametrize(
    ("serial", "shown"), [(0x0ABC, "0ABC"), (0x80, "80"), (1, "01"), (0xA1B2C3, "A1B2C3")]
)
def test_a_serial_is_shown_in_whole_bytes_as_openssl_prints_it(serial: int, shown: str) -> None:
    # `openssl x509 -serial` of a certificate with serial 0xABC prints `serial=0ABC`.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serial")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(days(30))
        .sign(key, hashes.SHA256())
    )
    assert CertificateInfo.of(certificate).serial == shown == _whole_bytes(serial)


async def test_the_contracts_listing_judges_the_certificates_as_of_the_time_it_is_asked(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    monkeypatch: pytest.MonkeyPatch,
    partner_ca: Authority,
    our_ca: Authority,
) -> None:
    loaded_at = datetime.now(UTC)
    ours = our_ca.client(
        "gateway-dated", (loaded_at - timedelta(days=300), days_from(loaded_at, 40))
    )
    gw = await make_gateway([with_tls(**client_tls(ours))], files=pem_files(partner_ca, ours))
    # 40 days left at the load: nothing to say yet (of ours; the partner's CA is the fixture's,
    # valid for hours).
    assert [w for w in gw.runtime.policy.warnings if w.path == CLIENT_AT] == []

    # As a gateway loaded five weeks ago finds it.
    monkeypatch.setattr(ops_module, "datetime", stopped_clock(days_from(loaded_at, 35)))
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get("/_gateway/contracts", headers=admin)
    [listed] = (await response.json())["contracts"]
    [shown] = [w for w in listed["warnings"] if w["path"] == CLIENT_AT]
    end = days_from(loaded_at, 40)
    assert shown == {
        "partner": "acme",
        "path": "upstream.tls.client_cert_file",
        "message": (
            f"gateway-dated.pem: our client certificate expires on {end:%Y-%m-%dT%H:%M:%SZ}, "
            "in 5 day(s): from then the partner will refuse every share (502 upstream_error); "
            "install a renewed certificate (from the CA the partner trusts) and its key, and "
            "reload, in time"
        ),
    }


async def test_the_contracts_listing_keeps_no_dated_warning_of_the_load_that_has_gone_stale(
    make_gateway: GatewayFactory,
    partner: TlsPartner,
    monkeypatch: pytest.MonkeyPatch,
    partner_ca: Authority,
    our_ca: Authority,
) -> None:
    loaded_at = datetime.now(UTC)
    ours = our_ca.client(
        "gateway-soon", (loaded_at - timedelta(days=300), days_from(loaded_at, 20))
    )
    doc = with_tls(**client_tls(ours))
    doc["contract"]["effective"] = (loaded_at.date() + timedelta(days=10)).isoformat()
    gw = await make_gateway([doc], files=pem_files(partner_ca, ours))
    # At the load: not in force yet, ours ends in 20 days, the partner's CA (the fixture's,
    # valid for hours) within a day.
    assert [w.path for w in gw.runtime.policy.warnings] == [
        "routes.2.subject",
        "contract.effective",
        CLIENT_AT,
        CA_AT,
    ]

    # As a gateway loaded five weeks ago finds it: in force, both certificates ended.
    monkeypatch.setattr(ops_module, "datetime", stopped_clock(days_from(loaded_at, 35)))
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get("/_gateway/contracts", headers=admin)
    [listed] = (await response.json())["contracts"]
    assert [w["path"] for w in listed["warnings"]] == ["routes.2.subject", CLIENT_AT, CA_AT]
    for shown in listed["warnings"][1:]:
        assert " expired on " in shown["message"]


def days_from(instant: datetime, n: int) -> datetime:
    # Whole seconds: a certificate's times have no fraction.
    return instant.replace(microsecond=0) + timedelta(days=n)


async def test_the_metrics_count_down_to_our_certificates_end_for_the_set_in_force(
    make_gateway: GatewayFactory, partner: TlsPartner, partner_ca: Authority, one: Issued
) -> None:
    gw = await make_gateway([with_tls(**client_tls(one))], files=pem_files(partner_ca, one))
    name = 'share_gateway_partner_certificate_expiry_seconds{partner="acme"}'

    async def series() -> list[float]:
        text = await (await gw.client.get("/_gateway/metrics")).text()
        return [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]

    end = x509.load_pem_x509_certificate(one.cert_pem).not_valid_after_utc
    most = (end - datetime.now(UTC)).total_seconds()  # taken before the scrape: no less left
    [left] = await series()
    assert 0 < left <= most
    # Reloaded without `tls`, the partner presents no certificate: its series goes.
    folder = gw.runtime.settings.contracts_dir
    doc = contract()
    doc["upstream"]["base_url"] = partner.base_url
    (folder / "acme.yaml").write_text(yaml.safe_dump(doc))
    await gw.runtime.reload()
    assert await series() == []
