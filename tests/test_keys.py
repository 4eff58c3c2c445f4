"""Tests for gateway.keys: the master key every pseudonym derives from."""

from __future__ import annotations

import pytest

from gateway.errors import StartupError
from gateway.keys import master_key
from gateway.settings import Settings

ENV = "SHARE_GATEWAY_HASH_KEY"


@pytest.mark.parametrize(
    ("secret", "starts"),
    [
        ("k" * 32, True),
        ("k" * 31, False),
        ("\u00e9" * 16, True),  # 16 characters, 32 bytes: the rule counts bytes
        ("\u00e9" * 15 + "k", False),
        ("", False),
    ],
    ids=["32_bytes", "31_bytes", "32_bytes_in_16_characters", "31_bytes_in_16_characters", "none"],
)
def test_the_hash_key_must_hold_32_bytes(secret: str, starts: bool) -> None:
    settings = Settings()
    assert settings.secrets.hash_key_env == ENV
    if starts:
        assert master_key(settings, {ENV: secret}) == secret.encode()
        return
    with pytest.raises(StartupError) as refused:
        master_key(settings, {ENV: secret})
    assert refused.value.problems == [
        f"environment variable {ENV} must hold a secret of at least 32 bytes"
    ]
