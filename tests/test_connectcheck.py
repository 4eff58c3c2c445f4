"""`contracts connect`: a partner's connection checked as a share would meet it, with nothing
sent, from the contract's files to what the partner saw."""

from __future__ import annotations

import asyncio
import copy
import socket
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from certs import Authority, Issued
from conftest import contract, stopped_clock
from partners import RawPartner, TlsPartner

from gateway import cli, connectcheck

DEFAULT_WAIT_S = connectcheck.REFUSAL_WAIT_S
JSON = ("--format", "json")
# Long enough for an alert on loopback; short, since a check that is not refused waits it out.
WAIT_S = 0.2


@pytest.fixture(scope="module")
def partner_ca() -> Authority:
    return Authority("Partner CA")


@pytest.fixture(scope="module")
def our_ca() -> Authority:
    """The CA the partner issued the gateway's client certificate from."""
    return Authority("Partner client CA")


@pytest.fixture(scope="module")
def one(our_ca: Authority) -> Issued:
    return our_ca.client("gateway-one")


@pytest.fixture(autouse=True)
def short_wait(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(connectcheck, "REFUSAL_WAIT_S", WAIT_S)
    monkeypatch.chdir(tmp_path)  # no gateway.yaml of the working folder's


def _context(
    served: Issued, our_ca: Authority, version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
) -> ssl.SSLContext:
    """A partner's context that lets in only callers with a certificate from `our_ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.maximum_version = version
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=our_ca.cert_pem.decode())
    with tempfile.TemporaryDirectory() as folder:
        cert, key = served.write(Path(folder), "served")
        context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def partner(
    request: pytest.FixtureRequest, partner_ca: Authority, our_ca: Authority
) -> AsyncIterator[TlsPartner]:
    """Over TLS 1.3 unless a test's `indirect` parameter names the highest version it speaks."""
    version = getattr(request, "param", ssl.TLSVersion.MAXIMUM_SUPPORTED)
    fake = await TlsPartner(_context(partner_ca.server(), our_ca, version)).start()
    yield fake
    await fake.close()


def _folder(
    tmp_path: Path,
    base_url: str,
    tls: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    **contract_info: Any,
) -> Path:
    folder = tmp_path / "contracts"
    folder.mkdir()
    for name, content in (files or {}).items():
        (folder / name).write_bytes(content)
    doc = contract(upstream={"base_url": base_url, **({"tls": tls} if tls else {})})
    doc["contract"] = {**doc["contract"], **contract_info}
    (folder / "acme.yaml").write_text(yaml.safe_dump(copy.deepcopy(doc)))
    return folder


def _mutual(partner_ca: Authority, client: Issued) -> tuple[dict[str, str], dict[str, bytes]]:
    tls = {
        "ca_file": "partner-ca.pem",
        "client_cert_file": "ours.pem",
        "client_key_file": "ours.key",
    }
    files = {
        "partner-ca.pem": partner_ca.cert_pem,
        "ours.pem": client.cert_pem,
        "ours.key": client.key_pem,
    }
    return tls, files


async def connect(folder: Path, *options: str, insecure: bool = False) -> int:
    """`contracts connect acme` on a thread of its own: it runs its own event loop, and the
    partner's runs on this one."""
    argv = ["contracts", "connect", "acme", "--contracts", str(folder), *options]
    if insecure:
        config = folder.parent / "gateway.yaml"
        config.write_text("allow_insecure_upstreams: true\n")
        argv = ["--config", str(config), *argv]
    return await asyncio.wait_for(asyncio.to_thread(cli.main, argv), timeout=30)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def connect_to_raw(tmp_path: Path, scheme: str, handler: Handler) -> tuple[int, int]:
    """`contracts connect` against a bare loopback server running `handler` on each
    connection: the command's exit code, and the server's port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        folder = _folder(tmp_path, f"{scheme}://127.0.0.1:{port}")
        return await connect(folder, insecure=scheme == "http"), port
    finally:
        server.close()


def _reset_on_close(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0: closing sends a reset, not a FIN.
    linger_off = struct.pack("ii", 1, 0)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_off)


def _fields(out: str) -> dict[str, str]:
    """The report's `key: value` lines (each key once, but `note`)."""
    return dict(line.split(": ", 1) for line in out.splitlines() if not line.startswith("note:"))


async def _served(partner: TlsPartner) -> None:
    """Until the partner is done with every connection it took: what it saw is then complete."""
    # Each connection's task is there from its first byte: the check has handshaken by now.
    tasks = list(partner._tasks)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending


# --- connecting ---------------------------------------------------------------------------------


async def test_mutual_tls_accepted_is_ok_and_the_partner_reads_nothing(
    tmp_path: Path,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tls, files = _mutual(partner_ca, one)
    folder = _folder(tmp_path, partner.base_url, tls, files)
    assert await connect(folder) == 0
    await _served(partner)
    # The partner took our certificate, and read no byte of application data: no request.
    assert partner.subjects == ["gateway-one"]
    assert (partner.bytes_read, partner.received, partner.refused) == (0, [], 0)
    # Ended as TLS asks: a partner that logs cut connections as attacks logs none of ours.
    assert partner.closed_cleanly == 1
    out = capsys.readouterr().out
    fields = _fields(out)
    assert fields == {
        "partner": "acme",
        "status": "active",
        "base_url": partner.base_url,
        "address": f"127.0.0.1:{partner.port}",
        "tls_version": "TLSv1.3",
        "cipher": fields["cipher"],
        "certificate_subject": "CN=127.0.0.1",
        "certificate_issuer": "CN=Partner CA",
        "certificate_dns_names": "none",
        "certificate_not_after": fields["certificate_not_after"],
        "certificate_days_left": "0",
        "certificate_notice": fields["certificate_notice"],
        "client_certificate": "CN=gateway-one",
        "result": "ok",
    }
    assert fields["cipher"].startswith("TLS_")
    assert out.splitlines()[-1] == (
        f"note: not refused within {WAIT_S:g} s of the handshake: the partner may still refuse "
        "at its first request"
    )


async def test_a_ca_file_that_did_not_issue_the_partners_certificate_does_not_verify(
    tmp_path: Path, partner: TlsPartner, one: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    tls, files = _mutual(Authority("Someone else's CA"), one)
    folder = _folder(tmp_path, partner.base_url, tls, files)
    assert await connect(folder) == 1
    await _served(partner)
    fields = _fields(capsys.readouterr().out)
    assert fields["result"] == (
        "certificate did not verify (unable to get local issuer certificate)"
    )
    # TCP connected: the address is the one that showed the certificate.
    assert fields["address"] == f"127.0.0.1:{partner.port}"
    assert "tls_version" not in fields
    assert (partner.bytes_read, partner.subjects) == (0, [])


@pytest.mark.parametrize(
    ("partner", "alert"),
    [
        # After our side of the handshake ended: seen only by waiting for it.
        (ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
        # While connecting.
        (ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ],
    indirect=["partner"],
    ids=["tls1.3", "tls1.2"],
)
async def test_without_our_certificate_the_partner_refuses(
    tmp_path: Path,
    partner: TlsPartner,
    partner_ca: Authority,
    alert: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole default wait: the alert ends it, not the clock.
    monkeypatch.setattr(connectcheck, "REFUSAL_WAIT_S", 1.0)
    files = {"partner-ca.pem": partner_ca.cert_pem}
    folder = _folder(tmp_path, partner.base_url, {"ca_file": "partner-ca.pem"}, files)
    assert await connect(folder) == 1
    await _served(partner)
    fields = _fields(capsys.readouterr().out)
    assert (fields["client_certificate"], fields["result"]) == ("none", f"refused ({alert})")
    assert fields["address"] == f"127.0.0.1:{partner.port}"
    assert (partner.refused, partner.bytes_read, partner.received) == (1, 0, [])


@pytest.mark.parametrize(
    "partner",
    [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
    indirect=True,
    ids=["tls1.3", "tls1.2"],
)
async def test_a_certificate_from_a_ca_the_partner_does_not_trust_is_refused(
    tmp_path: Path, partner: TlsPartner, partner_ca: Authority, capsys: pytest.CaptureFixture[str]
) -> None:
    tls, files = _mutual(partner_ca, Authority("Another client CA").client("gateway-one"))
    assert await connect(_folder(tmp_path, partner.base_url, tls, files)) == 1
    await _served(partner)
    fields = _fields(capsys.readouterr().out)
    assert fields["result"] == "refused (TLSV1_ALERT_UNKNOWN_CA)"
    assert (partner.refused, partner.bytes_read) == (1, 0)


async def test_a_closed_port_could_not_connect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = await RawPartner().start()
    await closed.stop_listening()
    folder = _folder(tmp_path, f"https://127.0.0.1:{closed.port}")
    assert await connect(folder) == 1
    out = capsys.readouterr().out
    fields = _fields(out)
    assert (fields["address"], fields["result"]) == (
        "none",
        "could not connect (Connection refused)",
    )
    # Not connected: nothing is said of a refusal it was watched for.
    assert "note:" not in out


async def test_a_partner_that_never_answers_the_handshake_times_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = await RawPartner().start()  # reads a request that never comes, writes nothing
    try:
        folder = _folder(tmp_path, silent.base_url.replace("http:", "https:"))
        assert await connect(folder, "--timeout", "0.3") == 1
    finally:
        await silent.close()
    fields = _fields(capsys.readouterr().out)
    assert fields["result"] == "timed out (not connected within 0.3 s)"
    assert fields["address"] == f"127.0.0.1:{silent.port}"


async def test_a_plain_http_partner_is_connected_to_without_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = await RawPartner().start()
    try:
        # Shown as the partner client joins routes to it: without the trailing slash.
        folder = _folder(tmp_path, f"{plain.base_url}/", status="suspended")
        assert await connect(folder, insecure=True) == 0
        assert (plain.connections, plain.requests) == (1, [])
    finally:
        await plain.close()
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "partner: acme",
        "status: suspended",  # any status: a suspended partner is checked before resuming
        f"base_url: {plain.base_url}",
        f"address: 127.0.0.1:{plain.port}",
        "result: ok",
        "note: plain HTTP: no TLS",
        f"note: not refused within {WAIT_S:g} s of connecting: the partner may still refuse at "
        "its first request",
    ]


async def test_a_partner_that_closes_once_connected_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # as a partner that lets in only the addresses it knows

    assert (await connect_to_raw(tmp_path, "http", hang_up))[0] == 1
    fields = _fields(capsys.readouterr().out)
    assert fields["result"] == "refused (the partner closed the connection)"


async def test_a_partner_that_resets_once_connected_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connectcheck, "REFUSAL_WAIT_S", 10.0)  # the reset ends it

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Once the check has connected and is watching (a reset before that fails the
        # connecting); closed with SO_LINGER 0: a reset, not a close.
        await asyncio.sleep(0.2)
        _reset_on_close(writer)
        writer.transport.abort()

    assert (await connect_to_raw(tmp_path, "http", reset))[0] == 1
    fields = _fields(capsys.readouterr().out)
    assert fields["result"] == "refused (the connection was ended: Connection reset by peer)"


async def test_a_partner_that_does_not_speak_tls_could_not_connect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain HTTP server's answer to our TLS hello: no refusal of our certificate.
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    code, port = await connect_to_raw(tmp_path, "https", plain)
    assert code == 1
    fields = _fields(capsys.readouterr().out)
    assert fields["result"] == "could not connect (the TLS handshake failed: WRONG_VERSION_NUMBER)"
    assert fields["address"] == f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("reset", "reason"),
    [
        (False, "the partner closed the connection"),
        (True, "the connection was ended: Connection reset by peer"),
    ],
    ids=["closed", "reset"],
)
async def test_a_partner_that_ends_the_connection_during_the_handshake_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reset: bool, reason: str
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # our ClientHello, read so that a close is a clean one
        if reset:
            _reset_on_close(writer)
        writer.close()  # as a partner that lets in only the addresses it knows

    code, port = await connect_to_raw(tmp_path, "https", hang_up)
    assert code == 1
    fields = _fields(capsys.readouterr().out)
    assert fields["address"] == f"127.0.0.1:{port}"
    assert fields["result"] == f"refused ({reason})"


def test_a_connection_ended_with_no_reason_given_is_said_so() -> None:
    assert connectcheck._why(ConnectionResetError()) == (
        "the partner ended the connection as it was made"
    )
    assert connectcheck._why(ConnectionResetError(104, "ignored")) == "Connection reset by peer"


async def test_an_ipv6_address_is_written_in_brackets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    try:
        server = await asyncio.start_server(hold, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = server.sockets[0].getsockname()[1]
    try:
        assert await connect(_folder(tmp_path, f"http://[::1]:{port}"), insecure=True) == 0
    finally:
        server.close()
    assert _fields(capsys.readouterr().out)["address"] == f"[::1]:{port}"


async def test_a_name_not_found_could_not_connect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        # The resolver's answer for a name no one registered, without asking a name server.
        if host == "api.acme.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    assert await connect(_folder(tmp_path, "https://api.acme.invalid")) == 1
    fields = _fields(capsys.readouterr().out)
    assert (fields["address"], fields["result"]) == (
        "none",
        "could not connect (the name was not found: Name or service not known)",
    )


async def test_a_plain_http_partner_needs_allow_insecure_upstreams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path, "http://127.0.0.1:1")
    assert await connect(folder) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "allow_insecure_upstreams" in captured.err


async def test_an_unknown_partner_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path, "https://127.0.0.1:1")
    argv = ["contracts", "connect", "nobody", "--contracts", str(folder)]
    assert await asyncio.to_thread(cli.main, argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (
        "",
        "unknown_partner: no contract for partner 'nobody'\n",
    )


async def test_the_refusal_is_watched_for_within_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Longer than the test's own limit: only the timeout can end the watch in time.
    monkeypatch.setattr(connectcheck, "REFUSAL_WAIT_S", 60.0)
    plain = await RawPartner().start()
    try:
        folder = _folder(tmp_path, plain.base_url)
        assert await connect(folder, "--timeout", "0.3", *JSON, insecure=True) == 0
    finally:
        await plain.close()
    note = orjson.loads(capsys.readouterr().out)["notes"][-1]
    waited = float(note.removeprefix("not refused within ").split(" s ")[0])
    assert 0 < waited <= 0.3


async def test_a_refusal_is_watched_for_a_second_unless_told_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough for a TLS 1.3 alert from a partner across the world.
    monkeypatch.setattr(connectcheck, "REFUSAL_WAIT_S", DEFAULT_WAIT_S)
    plain = await RawPartner().start()
    try:
        assert await connect(_folder(tmp_path, plain.base_url), insecure=True) == 0
    finally:
        await plain.close()
    assert capsys.readouterr().out.splitlines()[-1] == (
        "note: not refused within 1 s of connecting: the partner may still refuse at its first "
        "request"
    )


# --- what it reports ----------------------------------------------------------------------------


async def test_the_partners_certificate_ending_within_30_days_is_said_so(
    tmp_path: Path,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The partner's certificate is the fixture's: valid for two hours from now.
    tls, files = _mutual(partner_ca, one)
    folder = _folder(tmp_path, partner.base_url, tls, files)
    assert await connect(folder) == 0
    fields = _fields(capsys.readouterr().out)
    not_after = fields["certificate_not_after"]
    ends = datetime.strptime(not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(hours=1) < ends - datetime.now(UTC) <= timedelta(hours=2)
    assert fields["certificate_notice"] == (
        f"the partner's certificate expires on {not_after}, within a day: from then every share "
        "fails (502 upstream_error) unless the partner renews it; ask it in time"
    )


async def test_the_partners_certificate_ending_right_after_the_handshake_is_said_to_have_expired(
    tmp_path: Path,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Verified at the handshake, read at the report: a certificate that ends in between (here,
    # a report read as of three hours on) is said to be over, not to end "within a day".
    monkeypatch.setattr(
        connectcheck, "datetime", stopped_clock(datetime.now(UTC) + timedelta(hours=3))
    )
    tls, files = _mutual(partner_ca, one)
    assert await connect(_folder(tmp_path, partner.base_url, tls, files)) == 0
    fields = _fields(capsys.readouterr().out)
    assert fields["certificate_notice"] == (
        f"the partner's certificate expired on {fields['certificate_not_after']}: every share "
        "fails (502 upstream_error) until the partner installs a renewed one"
    )


@pytest.mark.parametrize(
    ("days", "notice"),
    [(29.5, "in 29 day(s)"), (30.5, None)],
    ids=["within_30_days", "after_30_days"],
)
async def test_the_notice_is_given_30_days_before_the_partners_certificate_ends(
    tmp_path: Path,
    partner_ca: Authority,
    our_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
    days: float,
    notice: str | None,
) -> None:
    now = datetime.now(UTC)
    served = partner_ca.server(None, (now - timedelta(days=1), now + timedelta(days=days)))
    ending = await TlsPartner(_context(served, our_ca)).start()
    try:
        tls, files = _mutual(partner_ca, one)
        assert await connect(_folder(tmp_path, ending.base_url, tls, files), *JSON) == 0
    finally:
        await ending.close()
    shown = orjson.loads(capsys.readouterr().out)["tls"]["certificate"]
    if notice is None:
        assert shown["notice"] is None
    else:
        assert f", {notice}: from then every share fails" in shown["notice"]


async def test_a_partners_certificate_that_has_ended_does_not_verify(
    tmp_path: Path,
    partner_ca: Authority,
    our_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    served = partner_ca.server(None, (now - timedelta(days=90), now - timedelta(days=1)))
    ended = await TlsPartner(_context(served, our_ca)).start()
    try:
        tls, files = _mutual(partner_ca, one)
        assert await connect(_folder(tmp_path, ended.base_url, tls, files)) == 1
    finally:
        await ended.close()
    fields = _fields(capsys.readouterr().out)
    # No session, so no certificate lines: OpenSSL's reason says what a notice would have.
    assert fields["result"] == "certificate did not verify (certificate has expired)"
    assert "certificate_notice" not in fields


async def test_a_certificate_far_from_its_end_has_no_notice(
    tmp_path: Path,
    partner_ca: Authority,
    our_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    served = partner_ca.server(
        "api.acme.example", (now - timedelta(days=1), now + timedelta(days=90))
    )
    lasting = await TlsPartner(_context(served, our_ca)).start()
    try:
        tls, files = _mutual(partner_ca, one)
        assert await connect(_folder(tmp_path, lasting.base_url, tls, files)) == 0
    finally:
        await lasting.close()
    fields = _fields(capsys.readouterr().out)
    assert fields["certificate_dns_names"] == "api.acme.example"
    assert fields["certificate_days_left"] in {"89", "90"}  # by when in the second it ran
    assert "certificate_notice" not in fields


async def test_certificates_cryptography_warns_of_are_noted_and_used(
    tmp_path: Path, our_ca: Authority, one: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    # `C=USA`, as real CAs have issued: a warning escaping the check would fail the test
    # (filterwarnings = error), on the command's thread as on this one.
    odd_ca = Authority("Odd CA", country="USA")
    fake = await TlsPartner(_context(odd_ca.server(country="USA"), our_ca)).start()
    try:
        tls, files = _mutual(odd_ca, one)
        folder = _folder(tmp_path, fake.base_url, tls, files)
        assert await connect(folder, *JSON) == 0
    finally:
        await fake.close()
    report = orjson.loads(capsys.readouterr().out)
    assert report["tls"]["certificate"]["subject"] == "CN=127.0.0.1,C=USA"
    warned = "cryptography warns: Attribute's length must be >= 2 and <= 2, but it was 3"
    used = "(OpenSSL accepts it, and the gateway uses it)"
    assert report["notes"][:2] == [
        f"the partner's certificate CN=127.0.0.1,C=USA: {warned} {used}",
        f"partner-ca.pem: the CA certificate CN=Odd CA,C=USA: {warned} {used}",
    ]


async def test_the_contracts_certificate_notices_are_noted_when_the_connection_fails(
    tmp_path: Path, one: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    # They are of the files, not of the connection: a partner that cannot be reached is when
    # the operator most needs to know its CA is odd.
    closed = await RawPartner().start()
    await closed.stop_listening()
    tls, files = _mutual(Authority("Odd CA", country="USA"), one)
    assert await connect(_folder(tmp_path, f"https://127.0.0.1:{closed.port}", tls, files)) == 1
    out = capsys.readouterr().out
    assert _fields(out)["result"] == "could not connect (Connection refused)"
    assert [line for line in out.splitlines() if line.startswith("note:")] == [
        "note: partner-ca.pem: the CA certificate CN=Odd CA,C=USA: cryptography warns: "
        "Attribute's length must be >= 2 and <= 2, but it was 3 (OpenSSL accepts it, and the "
        "gateway uses it)"
    ]


async def test_the_report_as_json(
    tmp_path: Path,
    partner: TlsPartner,
    partner_ca: Authority,
    one: Issued,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tls, files = _mutual(partner_ca, one)
    folder = _folder(tmp_path, partner.base_url, tls, files)
    assert await connect(folder, "--format", "json", "--timeout", "3") == 0
    report = orjson.loads(capsys.readouterr().out)
    certificate = report["tls"]["certificate"]
    assert report == {
        "partner": "acme",
        "status": "active",
        "base_url": partner.base_url,
        "address": f"127.0.0.1:{partner.port}",
        "tls": {
            "version": "TLSv1.3",
            "cipher": report["tls"]["cipher"],
            "certificate": {
                "subject": "CN=127.0.0.1",
                "issuer": "CN=Partner CA",
                "dns_names": [],
                "not_after": certificate["not_after"],
                "days_left": 0,
                "notice": certificate["notice"],
            },
        },
        "client_certificate": "CN=gateway-one",
        "result": "ok",
        "reason": None,
        "notes": [
            f"not refused within {WAIT_S:g} s of the handshake: the partner may still refuse "
            "at its first request"
        ],
    }
