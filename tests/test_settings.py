"""Gateway settings: defaults, the YAML file, environment overrides, paths and refusals."""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from gateway.auth import JWKS_MAX_AGE_S
from gateway.cli import _settings as cli_settings
from gateway.cli import build_parser, main
from gateway.settings import KeySettings, Settings, SettingsError, load_settings


def test_every_setting_has_a_safe_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.listen.host == "127.0.0.1"
    assert settings.listen.port == 8080
    assert settings.jurisdiction == "CN"
    assert settings.timezone == "Asia/Shanghai"
    assert settings.allow_insecure_upstreams is False
    assert settings.auth is None  # `serve` refuses to start without it
    assert settings.share_log.durability == "batched"
    assert settings.share_log.retention_days == 1095
    assert settings.limits.max_body_bytes == 1_048_576
    assert settings.limits.max_json_depth == 64
    assert settings.limits.max_upstream_connections == 256
    assert settings.limits.upstream_connections_per_origin == 64
    assert settings.contracts_dir == tmp_path / "contracts"


def test_the_example_file_loads_and_relative_paths_follow_the_file(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "gateway.example.yaml"
    config = tmp_path / "conf" / "gateway.yaml"
    config.parent.mkdir()
    config.write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings(config, environ={})
    assert settings.auth is not None
    assert settings.auth.public_key_file == tmp_path / "conf" / "keys" / "idp.pem"
    assert settings.share_log.path == tmp_path / "conf" / "var" / "share-log.sqlite"
    assert settings.registry.path == tmp_path / "conf" / "var" / "consent.sqlite"
    assert settings.contracts_dir == tmp_path / "conf" / "contracts"


def test_the_example_file_names_every_setting() -> None:
    # It is the list of settings the README points to: a setting it leaves out is unknown.
    example = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "gateway.example.yaml").read_text("utf-8")
    )
    missing = []
    for name, field in Settings.model_fields.items():
        if name not in example:
            missing.append(name)
            continue
        section = field.annotation
        choices = [a for a in getattr(section, "__args__", (section,)) if a is not type(None)]
        if len(choices) == 1 and isinstance(choices[0], type) and issubclass(choices[0], BaseModel):
            keys = set(choices[0].model_fields) - KEY_SOURCES  # one source is named, the others
            missing += [f"{name}.{key}" for key in sorted(keys - set(example[name]))]
    assert missing == []


# Where a section's keys come from: the example names one, and its comment the others.
KEY_SOURCES = {"jwks_file", "jwks_url", "hs256_secret_env"}


def test_environment_overrides_section_keys(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("listen: {port: 9000}\nshare_log: {durability: batched}\n")
    settings = load_settings(
        config,
        environ={
            "SHARE_GATEWAY_LISTEN_PORT": "9090",
            "SHARE_GATEWAY_SHARE_LOG_DURABILITY": "strict",
            "SHARE_GATEWAY_LIMITS_MAX_BODY_BYTES": "2048",
            "SHARE_GATEWAY_TIMEZONE": "UTC",
            "SHARE_GATEWAY_ALLOW_INSECURE_UPSTREAMS": "true",
            "SHARE_GATEWAY_HASH_KEY": "a secret, not a setting",
        },
    )
    assert settings.listen.port == 9090
    assert settings.share_log.durability == "strict"
    assert settings.limits.max_body_bytes == 2048
    assert settings.timezone == "UTC"
    assert settings.allow_insecure_upstreams is True


@pytest.mark.parametrize(
    ("options", "listen", "contracts"),
    [
        (
            ["--contracts", "elsewhere", "--host", "::1", "--port", "9091"],
            ("::1", 9091),
            "elsewhere",
        ),
        (["--port", "9091"], ("127.0.0.2", 9091), None),  # the file's host stays
        (["--host", "localhost"], ("localhost", 9000), None),
        ([], ("127.0.0.2", 9000), None),
    ],
)
def test_serve_options_override_the_settings_file(
    tmp_path: Path, options: list[str], listen: tuple[str, int], contracts: str | None
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("listen: {host: 127.0.0.2, port: 9000}\ncontracts_dir: partners\n")
    args = build_parser().parse_args(["serve", "--config", str(config), *options])
    settings = cli_settings(args)
    assert (settings.listen.host, settings.listen.port) == listen
    expected = Path(contracts) if contracts else tmp_path / "partners"
    assert settings.contracts_dir == expected


def test_a_secret_under_the_prefix_is_never_parsed_or_shown(tmp_path: Path) -> None:
    secret = "@Xy7#kP2!vQ9&mZ4*rT6^wL8%nB3$hJ5(sD1)"  # not valid YAML, and must stay unseen
    settings = load_settings(None, environ={"SHARE_GATEWAY_HASH_KEY": secret})
    assert settings.listen.port  # loaded, the key untouched
    with pytest.raises(SettingsError) as caught:
        load_settings(
            None,
            environ={"SHARE_GATEWAY_HASH_KEY": secret, "SHARE_GATEWAY_LISTEN_PORT": "0x10"},
        )
    assert secret[:8] not in str(caught.value.problems)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHARE_GATEWAY_LISTEN_PORT", "1:20"),  # YAML 1.1 would read 80
        ("SHARE_GATEWAY_LIMITS_MAX_BODY_BYTES", "0x10"),  # and 16
        ("SHARE_GATEWAY_LISTEN_PORT", "70000"),
        ("SHARE_GATEWAY_LISTEN_HOST", ""),  # left blank: was every interface
    ],
)
def test_a_bad_override_is_reported_under_its_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("listen: {port: 9000}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={variable: value})
    [problem] = caught.value.problems
    assert problem.startswith(f"{variable}: ")
    assert str(config) not in problem


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("listen: {prot: 1}\n", "listen.prot"),
        ("share_log: {durability: sometimes}\n", "share_log.durability"),
        ("share_log: {retention_days: 30}\n", "share_log.retention_days"),
        # Its cut fell before the year 1: `logs prune` ended in a traceback.
        ("share_log: {retention_days: 1000000}\n", "share_log.retention_days"),
        ("timezone: Mars/Olympus\n", "unknown time zone"),
        ("jurisdiction: china\n", "jurisdiction"),
        (
            "auth: {issuer: i, audience: a, public_key_file: k.pem, jwks_file: j.json}\n",
            "exactly one of",
        ),
        # No key source: no caller token could ever be verified.
        ("auth: {issuer: i, audience: a}\n", "auth: Value error, exactly one of"),
        ("consent: {issuer: i}\n", "consent: Value error, exactly one of"),
        (
            "auth: {issuer: i, audience: a, algorithms: [HS256], public_key_file: k.pem}\n",
            "HS256 is only allowed with hs256_secret_env",
        ),
        # The other direction of key confusion: a shared secret taken as an RSA or EC key.
        (
            "auth: {issuer: i, audience: a, algorithms: [RS256], hs256_secret_env: SECRET}\n",
            "auth: Value error, hs256_secret_env allows only algorithms: [HS256]",
        ),
        # No algorithm: every caller's token would be refused.
        (
            "auth: {issuer: i, audience: a, algorithms: [], public_key_file: k.pem}\n",
            "auth: Value error, algorithms must not be empty",
        ),
        # Deeper than orjson writes: a document read at that depth could not be passed on.
        ("limits: {max_json_depth: 255}\n", "limits.max_json_depth"),
        # No connection could ever be taken: the gateway would listen and answer nobody.
        ("limits: {max_connections: 0}\n", "limits.max_connections"),
        # No batching: an outcome would be committed ahead of the answer it belongs to.
        ("share_log: {batch_interval_ms: 0}\n", "share_log.batch_interval_ms"),
        # Under 256 bytes, a request line with a path and a query is soon refused as too long.
        ("limits: {max_line_size: 255}\n", "limits.max_line_size"),
        # A cap per origin above the ceiling would let one hanging partner hold every connection.
        (
            "limits: {max_upstream_connections: 32, max_upstream_connections_per_origin: 64}\n",
            "limits: Value error, max_upstream_connections_per_origin (64) must not exceed "
            "max_upstream_connections (32)",
        ),
        ("- a list\n", "mapping"),
        ("listen: {port: [\n", "not valid YAML"),
        # A key's line break made two lines of one problem.
        ('"listen\\nx": 1\n', "listen\\nx: Extra inputs"),
        # A host the resolver cannot encode, or a NUL in a path, was a traceback at start-up.
        ('listen: {host: "127.0.0..1"}\n', "listen.host: Value error, not an IP address"),
        (f"listen: {{host: {'a' * 64}.example}}\n", "listen.host: Value error, not an IP address"),
        ('listen: {host: "gw example"}\n', "listen.host: Value error, not an IP address"),
        # Read as 1: port 1, a one-second body deadline.
        ("listen: {port: yes}\n", "listen.port: Value error, true or false is not a number"),
        ("limits: {body_read_timeout_s: on}\n", "limits.body_read_timeout_s: Value error, true"),
        ("share_log: {checkpoint_every: true}\n", "share_log.checkpoint_every: Value error"),
        # Past a machine word the HTTP parser refused every connection of a gateway that started.
        ("limits: {max_line_size: 18446744073709551616}\n", "limits.max_line_size"),
        ("limits: {max_field_size: 1048577}\n", "limits.max_field_size"),
        ("limits: {max_headers: 18446744073709551616}\n", "limits.max_headers"),
        # The server read an empty host, or an IPv4 address in a shorthand, as 0.0.0.0 (and ::).
        ('listen: {host: ""}\n', "listen.host: Value error, must not be empty"),
        ('listen: {host: "0"}\n', "listen.host: Value error, an IPv4 address in a shorthand"),
        ('listen: {host: "127.1"}\n', "listen.host: Value error, an IPv4 address in a shorthand"),
        ('share_log: {path: "var/log\\0.sqlite"}\n', "share_log.path: Value error, a path cannot"),
        ('registry: {path: "\\0"}\n', "registry.path: Value error, a path cannot hold a NUL"),
        # Start-up then failed naming "environment variable  " (a variable nobody can set).
        ('secrets: {hash_key_env: ""}\n', "secrets.hash_key_env: Value error, must be"),
        ('secrets: {hash_key_env: "MY KEY"}\n', "secrets.hash_key_env: Value error, must be"),
        (
            'auth: {issuer: i, audience: a, hs256_secret_env: "a\\0"}\n',
            "auth.hs256_secret_env: Value error, must be",
        ),
        # Read as the settings folder: every use of it then failed about something else.
        ('share_log: {path: ""}\n', "share_log.path: Value error, must not be empty"),
        ("registry: {path: ' '}\n", "registry.path: Value error, must not be empty"),
        ('contracts_dir: ""\n', "contracts_dir: Value error, must not be empty"),
        (
            'auth: {issuer: i, audience: a, public_key_file: "k\\0.pem"}\n',
            "auth.public_key_file: Value error, a path cannot hold a NUL",
        ),
    ],
)
def test_invalid_settings_are_refused_with_the_key(
    tmp_path: Path, text: str, fragment: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.listen.port = 1  # type: ignore[misc]


AUTH = "auth: {issuer: i, audience: a, public_key_file: k.pem}\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # YAML keeps the last of two keys: a pasted development line would win over production.
        (
            "allow_insecure_upstreams: false\n" + AUTH + "allow_insecure_upstreams: true\n",
            "allow_insecure_upstreams: duplicate key",
        ),
        (
            AUTH + "auth: {issuer: https://other.example, audience: x, jwks_url: 'https://o/'}\n",
            "auth: duplicate key",
        ),
        ("limits: {max_body_bytes: 1048576, max_body_bytes: 2}\n", "limits.max_body_bytes"),
        ("limits: {max_json_depth: 010}\n", "line 1, column 26"),  # YAML 1.1: octal 8
        ("limits: {body_read_timeout_s: 1:30}\n", "line 1, column 31"),  # and base 60: 90
        ("listen: {port: 0x1f90}\n", "line 1, column 16"),
        # The caps a contract has, in the settings file's words.
        ("listen: " + "[" * 17 + "]" * 17 + "\n", "a contract or the settings file needs a few"),
        ("a: &x [*x]\n", "no contract or settings file is recursive"),
    ],
)
def test_the_file_is_read_as_strictly_as_a_contract(
    tmp_path: Path, text: str, fragment: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ('auth:\n  note: "the client secret is Zx9-QQ-s3cret\n', "line 3, column 1"),
        ("secrets: {hash_key_env: !Zx9-QQ-s3cret}\n", "line 1, column 39"),
        ("secrets: {hash_key_env: *Zx9-QQ-s3cret}\n", "line 1, column 25"),
        ("secrets: {hash_key_env: 0712345670}\n", "line 1, column 25"),
        ('secrets: {hash_key_env: "Zx9-QQ-s3cret\\q"}\n', "line 1, column 40"),
        ("secrets: {hash_key_env: Zx9-QQ-s3cret\x07}\n", "line 1, column 38"),
    ],
)
def test_a_file_yaml_cannot_read_is_placed_never_quoted(
    tmp_path: Path, text: str, place: str
) -> None:
    # A secret pasted where a variable's name belongs must not reach a terminal or a log.
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}: ")
    assert place in problem
    assert not any(secret in problem for secret in ("Zx9", "s3cret", "0712345670"))


def test_a_file_not_in_utf8_is_refused_with_its_offset(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_bytes(b"listen: {host: \xff}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [f"{config}: not valid UTF-8 (byte 0xff at offset 15)"]


# What a section needs besides the key under test to be valid.
REQUIRED = {"auth": "issuer: i, audience: a, public_key_file: k.pem", "consent": "jwks_file: j"}


def _float_settings() -> list[tuple[str, str]]:
    # Every float setting, found in the models: one added later is covered without a word here.
    found = []
    for name, field in Settings.model_fields.items():
        section = field.annotation
        models = [a for a in getattr(section, "__args__", (section,)) if a is not type(None)]
        model = models[0]
        if isinstance(model, type) and issubclass(model, BaseModel):
            found += [(name, key) for key, f in model.model_fields.items() if f.annotation is float]
    return found


def test_lowering_the_partner_connection_ceiling_alone_lowers_the_cap_per_origin() -> None:
    limits = Settings.model_validate({"limits": {"max_upstream_connections": 32}}).limits
    assert limits.upstream_connections_per_origin == 8


def test_there_are_float_settings_to_check() -> None:
    assert ("limits", "body_read_timeout_s") in _float_settings()
    assert ("auth", "jwks_refresh_min_interval_s") in _float_settings()


@pytest.mark.parametrize(("section", "key"), _float_settings())
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_no_setting_is_infinite_or_not_a_number(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    # `.inf` passes a lower bound and would switch the deadline off: a slowloris never cut off.
    config = tmp_path / "gateway.yaml"
    others = REQUIRED.get(section, "")
    config.write_text(f"{section}: {{{others}{', ' if others else ''}{key}: {value}}}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [f"{config}: {section}.{key}: Input should be a finite number"]


@pytest.mark.parametrize(("section", "key"), _float_settings())
@pytest.mark.parametrize("value", ["inf", "-Infinity", "nan", "1e400"])
def test_no_override_is_infinite_or_not_a_number(section: str, key: str, value: str) -> None:
    variable = f"SHARE_GATEWAY_{section}_{key}".upper()
    with pytest.raises(SettingsError) as caught:
        load_settings(None, environ={variable: value})
    assert f"{variable}: Input should be a finite number" in caught.value.problems


def test_the_read_deadlines_cut_a_slowloris_off_within_15_s_by_default() -> None:
    limits = Settings().limits
    assert limits.header_read_timeout_s <= 15
    assert limits.body_read_timeout_s <= 15


# The most each float setting takes: a deadline of hours is a typo that holds connections.
UPPER_BOUNDS = {
    ("limits", "body_read_timeout_s"): 300,
    ("limits", "header_read_timeout_s"): 300,
    ("limits", "keepalive_timeout_s"): 3600,
    ("auth", "leeway_s"): 300,
    ("auth", "jwks_refresh_min_interval_s"): 300,
    ("consent", "leeway_s"): 300,
    ("consent", "jwks_refresh_min_interval_s"): 300,
    ("share_log", "batch_interval_ms"): 1000,
}


def test_every_float_setting_has_an_upper_bound_listed() -> None:
    assert sorted(_float_settings()) == sorted(UPPER_BOUNDS)


def write_one_setting(config: Path, section: str, key: str, value: object) -> None:
    """A settings file setting `section.key`, with what that section requires besides."""
    others = REQUIRED.get(section, "")
    config.write_text(f"{section}: {{{others}{', ' if others else ''}{key}: {value}}}\n")


@pytest.mark.parametrize(("section", "key", "most"), [(*k, v) for k, v in UPPER_BOUNDS.items()])
def test_a_float_setting_takes_up_to_its_bound(
    tmp_path: Path, section: str, key: str, most: int
) -> None:
    config = tmp_path / "gateway.yaml"
    write_one_setting(config, section, key, most)
    assert getattr(getattr(load_settings(config, environ={}), section), key) == most
    write_one_setting(config, section, key, f"{most}.5")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        f"{config}: {section}.{key}: Input should be less than or equal to {most}"
    ]


@pytest.mark.parametrize(
    ("section", "key", "least"),
    [
        # 0 is a choice, not a typo: no query parameter at all, no verified token kept.
        ("limits", "max_query_params", 0),
        ("auth", "token_cache_size", 0),
        ("limits", "keepalive_timeout_s", 0),
        ("auth", "leeway_s", 0),
        ("limits", "max_json_depth", 1),
        ("limits", "max_line_size", 256),
        ("limits", "max_headers", 8),
        ("share_log", "retention_days", 1095),
        ("auth", "jwks_refresh_min_interval_s", 1),
    ],
)
def test_a_setting_takes_down_to_its_least_value(
    tmp_path: Path, section: str, key: str, least: int
) -> None:
    config = tmp_path / "gateway.yaml"
    write_one_setting(config, section, key, least)
    assert getattr(getattr(load_settings(config, environ={}), section), key) == least
    write_one_setting(config, section, key, least - 1)
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        f"{config}: {section}.{key}: Input should be greater than or equal to {least}"
    ]


@pytest.mark.parametrize("section", ["auth", "consent"])
def test_invented_kids_cause_at_most_one_jwks_fetch_a_second(tmp_path: Path, section: str) -> None:
    config = tmp_path / "gateway.yaml"
    others = REQUIRED.get(section, "")
    config.write_text(
        f"{section}: {{{others}{', ' if others else ''}jwks_refresh_min_interval_s: 0.5}}\n"
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        f"{config}: {section}.jwks_refresh_min_interval_s: Input should be greater than or "
        "equal to 1"
    ]


def test_an_unknown_kid_still_causes_a_fetch_at_the_longest_interval() -> None:
    settings = KeySettings.model_fields["jwks_refresh_min_interval_s"]
    assert any(getattr(m, "le", None) == JWKS_MAX_AGE_S for m in settings.metadata)


SECRET = "{Zx9-QQ-s3cret: [not, yaml"  # reads as the start of a YAML mapping, and is none


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        # The file names a variable that reads as an override of an unknown `secrets` key.
        (
            "secrets: {hash_key_env: SHARE_GATEWAY_SECRETS_HASH_KEY}\n",
            {"SHARE_GATEWAY_SECRETS_HASH_KEY": SECRET},
        ),
        # So does an override of the name.
        (
            "",
            {
                "SHARE_GATEWAY_SECRETS_HASH_KEY_ENV": "SHARE_GATEWAY_SECRETS_HASH_KEY",
                "SHARE_GATEWAY_SECRETS_HASH_KEY": SECRET,
            },
        ),
        # The file's name is kept when an override names another: it may still hold its secret.
        (
            "secrets: {hash_key_env: SHARE_GATEWAY_SECRETS_OLD_KEY}\n",
            {
                "SHARE_GATEWAY_SECRETS_HASH_KEY_ENV": "SHARE_GATEWAY_HASH_KEY",
                "SHARE_GATEWAY_SECRETS_OLD_KEY": SECRET,
            },
        ),
        (
            "auth: {issuer: i, audience: a, algorithms: [HS256],"
            " hs256_secret_env: SHARE_GATEWAY_AUTH_HS256_KEY}\n",
            {"SHARE_GATEWAY_AUTH_HS256_KEY": SECRET},
        ),
        (
            "consent: {algorithms: [HS256], hs256_secret_env: SHARE_GATEWAY_CONSENT_KEY}\n",
            {"SHARE_GATEWAY_CONSENT_KEY": SECRET},
        ),
    ],
)
def test_a_secret_named_like_an_override_is_no_override(
    tmp_path: Path, text: str, environ: dict[str, str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    settings = load_settings(config, environ=environ)
    assert SECRET not in str(settings.model_dump())


def test_a_secret_named_like_a_setting_is_not_that_setting(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("secrets: {hash_key_env: SHARE_GATEWAY_LISTEN_HOST}\n")
    settings = load_settings(config, environ={"SHARE_GATEWAY_LISTEN_HOST": "Zx9-QQ-s3cret"})
    assert settings.listen.host == "127.0.0.1"
    assert settings.secrets.hash_key_env == "SHARE_GATEWAY_LISTEN_HOST"


def test_a_list_override_is_read_as_strict_yaml(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    environ = {
        "SHARE_GATEWAY_AUTH_ISSUER": "i",
        "SHARE_GATEWAY_AUTH_AUDIENCE": "a",
        "SHARE_GATEWAY_AUTH_JWKS_FILE": "j.json",
        "SHARE_GATEWAY_AUTH_ALGORITHMS": "[ES256, EdDSA]",
    }
    settings = load_settings(config, environ=environ)
    assert settings.auth is not None
    assert settings.auth.algorithms == ("ES256", "EdDSA")


def test_a_text_override_is_the_text_as_written(tmp_path: Path) -> None:
    # Only a setting that takes a list parses its value: a name is never read as YAML.
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    environ = {
        "SHARE_GATEWAY_AUTH_ISSUER": "{iss}",
        "SHARE_GATEWAY_AUTH_AUDIENCE": "[aud]",
        "SHARE_GATEWAY_AUTH_JWKS_FILE": "j.json",
    }
    settings = load_settings(config, environ=environ)
    assert settings.auth is not None
    assert (settings.auth.issuer, settings.auth.audience) == ("{iss}", "[aud]")


@pytest.mark.parametrize(
    "value",
    [
        "[ES256, Zx9-QQ-s3cret",
        "[ES256, {Zx9-QQ-s3cret: 1, Zx9-QQ-s3cret: 2}]",
        "[ES256, !Zx9-QQ-s3cret]",
        "[ES256, *Zx9-QQ-s3cret]",
        "[ES256, 0712345670]",
        "[ES256]\n---\n[Zx9-QQ-s3cret]",
        "Zx9-QQ-s3cret",
        "{ES256: Zx9-QQ-s3cret}",
    ],
)
def test_a_list_override_yaml_cannot_read_is_refused_unquoted(tmp_path: Path, value: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    variable = "SHARE_GATEWAY_CONSENT_ALGORITHMS"
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={variable: value, "SHARE_GATEWAY_CONSENT_JWKS_FILE": "j"})
    [problem] = caught.value.problems
    assert problem.startswith(f"{variable}: not a list")
    assert not any(secret in problem for secret in ("Zx9", "s3cret", "0712345670"))


def _override_variables() -> list[str]:
    variables = []
    for name, field in Settings.model_fields.items():
        section = field.annotation
        models = [a for a in getattr(section, "__args__", (section,)) if a is not type(None)]
        model = models[0]
        if isinstance(model, type) and issubclass(model, BaseModel):
            variables += [f"SHARE_GATEWAY_{name}_{key}".upper() for key in model.model_fields]
        else:
            variables.append(f"SHARE_GATEWAY_{name}".upper())
    return variables


@pytest.mark.parametrize("variable", _override_variables())
@pytest.mark.parametrize("value", ["Zx9-QQ-s3cret", "[Zx9-QQ-s3cret]", "{Zx9-QQ-s3cret: 1}"])
def test_no_override_value_is_ever_shown(tmp_path: Path, variable: str, value: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    problems: list[str] = []
    try:
        load_settings(config, environ={variable: value})
    except SettingsError as exc:
        problems = exc.problems
    assert not any("Zx9" in problem or "s3cret" in problem for problem in problems)


def test_an_unknown_override_says_how_a_secret_may_be_named(tmp_path: Path) -> None:
    # A contract's credential under the prefix is no setting: start-up stops, saying why.
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    variable = "SHARE_GATEWAY_SECRETS_ACME_TOKEN"
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={variable: "Zx9-QQ-s3cret"})
    [problem] = caught.value.problems
    assert problem.startswith(f"{variable}: no such setting (a secret's variable is named")
    assert "Zx9" not in problem


@pytest.mark.parametrize(
    "variable",
    [
        "SHARE_GATEWAY_SHARELOG_DURABILITY",  # a misspelt section: batched would stay in force
        "SHARE_GATEWAY_LISTN_PORT",  # named like a Service's port, with no Service beside it
        "SHARE_GATEWAY_CONFIG",
        "SHARE_GATEWAY_",
    ],
)
def test_a_variable_under_the_prefix_that_names_no_setting_stops_start_up(
    tmp_path: Path, variable: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={variable: "strict"})
    assert caught.value.problems == [
        f"{variable}: no such setting (a secret's variable is named like an override only when "
        "secrets.hash_key_env or an hs256_secret_env names it)"
    ]


def test_a_kubernetes_services_link_variables_are_no_overrides(tmp_path: Path) -> None:
    # What a pod gets for Services named `share-gateway` and `share-gateway-consent`.
    config = tmp_path / "gateway.yaml"
    config.write_text("consent: {algorithms: [HS256], hs256_secret_env: CONSENT_KEY}\n")
    environ = {"CONSENT_KEY": "k" * 32, "SHARE_GATEWAY_LISTEN_PORT": "9090"}
    for service, port in (("SHARE_GATEWAY", "8080"), ("SHARE_GATEWAY_CONSENT", "443")):
        environ |= {
            f"{service}_SERVICE_HOST": "10.96.0.7",
            f"{service}_SERVICE_PORT": port,
            f"{service}_SERVICE_PORT_HTTP": port,
            f"{service}_PORT": f"tcp://10.96.0.7:{port}",
            f"{service}_PORT_{port}_TCP": f"tcp://10.96.0.7:{port}",
            f"{service}_PORT_{port}_TCP_PROTO": "tcp",
            f"{service}_PORT_{port}_TCP_PORT": port,
            f"{service}_PORT_{port}_TCP_ADDR": "10.96.0.7",
        }
    settings = load_settings(config, environ=environ)
    assert settings.listen.port == 9090
    assert settings.consent is not None
    assert settings.consent.algorithms == ("HS256",)


def test_the_file_is_capped_and_may_come_through_a_pipe(tmp_path: Path) -> None:
    # Read once, at the operator's word: a pipe (`--config <(envsubst < gateway.yaml)`) is read
    # as given, but nothing past 1 MiB is parsed (parsing takes seconds a MiB).
    fifo = tmp_path / "gateway.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write("listen: {port: 9091}\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert load_settings(fifo, environ={}).listen.port == 9091
    writer.join(timeout=20)
    assert load_settings(Path(os.devnull), environ={}).listen == Settings().listen
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(big, environ={})
    assert caught.value.problems == [
        f"{big}: larger than 1048576 bytes (1 MiB): a contract or the settings file is a few KB"
    ]


def test_relative_paths_of_settings_from_a_pipe_follow_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--config <(envsubst < gateway.yaml)` reads /dev/fd/63, which resolves under /proc: the
    # contracts and the logs are not there.
    monkeypatch.chdir(tmp_path)
    read, write = os.pipe()
    os.write(write, b"contracts_dir: partners\nshare_log: {path: logs/share.sqlite}\n")
    os.close(write)
    try:
        settings = load_settings(Path(f"/dev/fd/{read}"), environ={})
    finally:
        os.close(read)
    assert settings.contracts_dir == tmp_path / "partners"
    assert settings.share_log.path == tmp_path / "logs" / "share.sqlite"


# --- cap_shares -------------------------------------------------------------------------------


def test_cap_shares_are_read_exactly_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        'cap_shares:\n  "*": 1/3\n  acme-credit: 0.5\n  fixit: 1\n  cloudvault: 0.1\n'
    )
    settings = load_settings(config, environ={})
    assert settings.cap_shares == {
        "*": Fraction(1, 3),
        "acme-credit": Fraction(1, 2),
        "fixit": Fraction(1),
        "cloudvault": Fraction(1, 10),  # as written, not the float's binary value
    }
    assert settings.cap_share("acme-credit") == Fraction(1, 2)
    tiny = load_settings(environ={"SHARE_GATEWAY_CAP_SHARES": f"{{acme: 1/1{'0' * 30}}}"})
    assert tiny.cap_shares == {"acme": Fraction(1, 10**30)}  # refused later as a cap of nothing
    assert settings.cap_share("anyone-else") == Fraction(1, 3)
    overridden = load_settings(config, environ={"SHARE_GATEWAY_CAP_SHARES": "{acme-credit: 2/5}"})
    assert overridden.cap_shares == {"acme-credit": Fraction(2, 5)}
    assert overridden.cap_share("fixit") == Fraction(1)  # no "*": the whole cap


SHARE_MUST_BE_A_PART = "a share is more than 0 and at most 1 (the whole cap)"
NOT_A_SHARE = "not a share: a decimal (0.5) or n/d with positive integers (1/3)"


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("0", SHARE_MUST_BE_A_PART),
        ("0.0", SHARE_MUST_BE_A_PART),
        ("-0.5", SHARE_MUST_BE_A_PART),
        ("1.5", SHARE_MUST_BE_A_PART),
        ("3/2", SHARE_MUST_BE_A_PART),
        ("0/3", SHARE_MUST_BE_A_PART),
        ("1/0", "n/d with a denominator of 0 is no share"),
        ("true", "true or false is not a share (YAML reads yes, on, no, off so)"),
        ("half", NOT_A_SHARE),
        ('"0.5"', NOT_A_SHARE),
        ("-1/3", NOT_A_SHARE),
        ("1/3.0", NOT_A_SHARE),
        (".inf", "a share is a finite number"),
        (".nan", "a share is a finite number"),
        ("null", NOT_A_SHARE),
        (f"1/1{'0' * 5000}", "n/d with more than 4300 digits in n or d"),
    ],
    ids=lambda value: value[:24],
)
def test_a_cap_share_that_is_no_part_of_a_cap_is_refused_naming_its_key(
    tmp_path: Path, written: str, message: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"cap_shares:\n  acme-credit: {written}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [f"{config}: cap_shares.acme-credit: Value error, {message}"]
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"SHARE_GATEWAY_CAP_SHARES": f"{{acme-credit: {written}}}"})
    assert caught.value.problems == [f"SHARE_GATEWAY_CAP_SHARES: Value error, {message}"]


def test_a_cap_share_for_no_partner_id_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("cap_shares:\n  ACME: 0.5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        f"{config}: cap_shares.ACME.[key]: Value error, not a partner id (1-64 lower-case "
        'letters, digits and -, not starting or ending with -), nor "*" (every partner not named)'
    ]
    for value in ("0.5", "[acme]", "{acme: 1"):
        with pytest.raises(SettingsError) as caught:
            load_settings(environ={"SHARE_GATEWAY_CAP_SHARES": value})
        [problem] = caught.value.problems
        assert problem.startswith("SHARE_GATEWAY_CAP_SHARES: not a mapping")


def test_serve_refuses_an_invalid_cap_share_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text('cap_shares: {"*": 0}\n')
    assert main(["serve", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"{config}: cap_shares.*: Value error, a share is more than 0 and at most 1 "
        "(the whole cap)\n"
    )
