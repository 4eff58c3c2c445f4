"""The `share-gateway` command line as a process: what a command loads before it answers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import HASH_KEY

from gateway.keys import subject_ref, subject_ref_key
from gateway.settings import Settings, ShareLogSettings
from gateway.sharelog import ShareOutcome, ShareRecord
from gateway.sharelog.store import ShareLog

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"
SUBJECT = "u-100234"
ID_NUMBER = "11010519491231002X"

# The free-text scanner's tables and the HTTP client and server: a quarter of a second and more
# of CPU to import, which the commands below never use.
HEAVY = ("gateway.pii", "aiohttp")

# The console script's entry, then the heavy modules the command loaded, as stderr's last line.
RUN_AND_REPORT = f"""
import sys
from gateway.__main__ import main

sys.argv[0] = "share-gateway"
code = main()
print("loaded:", *(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
async def env(tmp_path: Path) -> dict[str, str]:
    """A share log holding one delivered share about SUBJECT and ID_NUMBER, and a consent
    registry's settings."""
    log_path = tmp_path / "share-log.sqlite"
    key = HASH_KEY.encode()
    share_log = await ShareLog.open(ShareLogSettings(path=log_path, stdout=False), key)
    try:
        await share_log.record(
            ShareRecord(
                share_id="s-1",
                ts=datetime(2025, 3, 1, 9, 0, tzinfo=UTC),
                partner="acme-credit",
                contract_id="DPA-1",
                contract_version=3,
                contract_sha256="c0" * 32,
                caller="billing",
                purpose="credit_assessment",
                method="POST",
                route="POST /v1/assess",
                decision="shared",
                reason="shared",
                fields_sent=("applicant.name",),
                fields_stripped=(),
                categories_sent=("identity.name",),
                pii_redactions={},
                records=1,
                subject_refs=tuple(
                    subject_ref(subject_ref_key(key), s) for s in (SUBJECT, ID_NUMBER)
                ),
                bytes_sent=40,
            )
        )
        await share_log.record_outcome(ShareOutcome("s-1", "delivered", 200, 12, 3.0))
    finally:
        await share_log.close()
    grants = tmp_path / "grants.csv"
    grants.write_text(
        "subject,partner,purpose,granted_at,withdrawn_at,reference\n"
        f"{SUBJECT},acme-credit,credit_assessment,2025-01-01T00:00:00+08:00,,ticket-1\n"
    )
    return {
        **os.environ,
        "SHARE_GATEWAY_HASH_KEY": HASH_KEY,
        "SHARE_GATEWAY_SHARE_LOG_PATH": str(log_path),
        "SHARE_GATEWAY_REGISTRY_PATH": str(tmp_path / "consent.sqlite"),
        "SHARE_GATEWAY_CONTRACTS_DIR": str(CONTRACTS),
        "GRANTS": str(grants),
    }


def share_gateway(env: dict[str, str], *args: str) -> tuple[int, str, str, set[str]]:
    """Exit code, stdout, stderr without the report, and the heavy modules the command loaded."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, *args],
        cwd=env["GRANTS"].rsplit("/", 1)[0],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    err, _, report = done.stderr.rstrip("\n").rpartition("\n")
    if not report.startswith("loaded:"):  # the command printed no stderr of its own
        err, report = "", done.stderr.strip()
    assert report.startswith("loaded:"), done.stderr
    return done.returncode, done.stdout, err, set(report.split()[1:])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("logs", "summary"), "categories sent  identity.name 1"),
        (("logs", "query"), "s-1"),
        (("logs", "verify"), "share log verified: 4 entries"),
        (("logs", "subject", SUBJECT), "s-1"),
        (("logs", "subject", ID_NUMBER), "s-1"),
        (("logs", "export"), '"share_id":"s-1"'),
        (("logs", "prune", "--dry-run"), "would remove 0 shares"),
        (("contracts", "validate"), "3 contract(s) valid"),
    ],
)
def test_a_command_that_scans_no_text_loads_neither_the_scanner_nor_aiohttp(
    env: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    code, out, err, loaded = share_gateway(env, *args)
    assert code == 0, err
    assert expected in out
    assert loaded == set()


def test_consent_import_loads_the_scanner_alone_and_consent_show_neither(
    env: dict[str, str],
) -> None:
    code, out, err, loaded = share_gateway(env, "consent", "import", env["GRANTS"])
    assert code == 0, err
    assert out.endswith("1 granted, 0 withdrawn, 0 unchanged\n")
    assert loaded == {"gateway.pii"}  # a row's partner and purpose are scanned for personal data

    code, out, err, loaded = share_gateway(env, "consent", "show", SUBJECT)
    assert code == 0, err
    assert "ticket-1   in force" in out
    assert loaded == set()


def test_an_id_number_written_in_groups_is_read_with_the_scanners_tables(
    env: dict[str, str],
) -> None:
    code, out, err, loaded = share_gateway(env, "logs", "subject", "110105 19491231 002x")
    assert code == 0, err
    assert "s-1" in out
    assert loaded == {"gateway.pii"}  # its folding table, built from the scanner's


@pytest.mark.parametrize(
    "args",
    [
        ("logs", "query", "--format", "json"),
        ("logs", "export"),
        ("consent", "import", "GRANTS"),
        ("contracts", "validate"),
        (
            "contracts",
            "explain",
            "acme-credit",
            "--route",
            "POST /v1/assess",
            "--purpose",
            "credit_assessment",
            "--format",
            "json",
        ),
    ],
)
def test_a_reader_that_leaves_early_ends_the_command_quietly(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    # `share-gateway ... | head`: the reader has what it wanted. The command stops, with no
    # traceback for the operator to read as a failure, however little it had still to write.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *(env.get(arg, arg) for arg in args)],
            cwd=env["GRANTS"].rsplit("/", 1)[0],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_contracts_validate_of_a_broken_folder_lists_its_problems_and_exits_1(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A deploy script runs `contracts validate` before it ships a folder: its exit code is the
    # verdict.
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "acme.yaml").write_text("- a list\n")
    code, out, err, loaded = share_gateway(env, "contracts", "validate", str(folder))
    assert code == 1
    assert out == f"{folder / 'acme.yaml'}: the top level must be a mapping\n"
    assert err == f"1 problem(s) in {folder}"
    assert loaded == set()


def test_serve_whose_stdout_went_away_never_exits_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unlike a reader leaving `| head`, a gateway whose share lines had nowhere to go failed:
    # exit 0 would tell its supervisor it stopped as asked, and it would not be restarted.
    import gateway.app
    import gateway.cli
    import gateway.logconfig

    async def stdout_gone(settings: Settings, *, ready: object = None) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gateway.app, "serve", stdout_gone)
    monkeypatch.setattr(gateway.logconfig, "configure_logging", lambda: None)
    monkeypatch.setattr(gateway.cli, "_install_uvloop", lambda: None)
    with pytest.raises(BrokenPipeError):
        gateway.cli.main(["serve"])


def test_building_the_parser_loads_no_commands_module() -> None:
    # The parser is built for every command, `health` every few seconds: the share log's reader,
    # the consent registry and SQLite are loaded by the commands that use them, not by the rest.
    # Only what the import and the build load: a coverage run has loaded SQLite before them.
    program = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from gateway.cli import build_parser\n"
        "build_parser()\n"
        "loaded = set(sys.modules) - before\n"
        "print(*sorted(m for m in loaded if m.startswith('gateway.') or m == 'sqlite3'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(done.stdout.split())
    assert "gateway.cli" in loaded  # the program ran as written
    assert loaded.isdisjoint({"gateway.sharelog.commands", "gateway.consent", "sqlite3"}), loaded


WARNED_CONTRACT = """\
partner: {id: acme, name: ACME, kind: other, relationship: entrusted}
contract: {id: DPA-1, version: 2, effective: 2025-01-01, expires: 2099-12-31, status: active}
upstream: {base_url: "https://api.acme.example", location: CN}
purposes: [service_delivery]
categories: [identity.name]
terms: {retention_days: 30}
routes:
  - method: POST
    path: /v1/people
    purpose: service_delivery
    fields: [{path: name, category: identity.name}]
"""


def _folder_with_a_warning(tmp_path: Path) -> tuple[Path, Path]:
    """A valid contracts folder whose one route sends a name about no subject."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    file = folder / "acme.yaml"
    file.write_text(WARNED_CONTRACT, encoding="utf-8")
    return folder, file


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "--strict"])
def test_contracts_validate_prints_warnings_on_stderr_and_fails_only_when_strict(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    strict: bool,
) -> None:
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)  # no gateway.yaml: the default settings
    folder, file = _folder_with_a_warning(tmp_path)
    args = ["contracts", "validate", str(folder), *(["--strict"] if strict else [])]
    code = main(args)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == (
        f"{file}: warning: routes.0.subject: sends personal data (identity.name) but names no "
        "subject: `logs subject` cannot find its shares; name the field that identifies the "
        "person (a body path, query. or path.)"
    )
    if strict:
        assert code == 1
        assert out == ""
        assert lines[1:] == [f"1 warning(s) in {folder}, counted as problems (--strict)"]
    else:
        assert code == 0
        assert out == "1 contract(s) valid: acme (v2)\n"
        assert lines[1:] == []


def test_contracts_validate_strict_counts_the_warnings_not_the_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    folder, file = _folder_with_a_warning(tmp_path)
    second = "  - {method: POST, path: /v1/others, purpose: service_delivery,\n"
    second += "     fields: [{path: name, category: identity.name}]}\n"
    file.write_text(WARNED_CONTRACT + second, encoding="utf-8")
    assert main(["contracts", "validate", str(folder), "--strict"]) == 1
    *warnings, summary = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in warnings] == ["routes.0.subject", "routes.1.subject"]
    assert summary == f"2 warning(s) in {folder}, counted as problems (--strict)"


def test_contracts_validate_strict_of_the_bundled_contracts_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["contracts", "validate", str(CONTRACTS), "--strict"]) == 0
    assert capsys.readouterr() == (
        "3 contract(s) valid: acme-credit (v3), cloudvault (v2), fixit (v1)\n",
        "",
    )
