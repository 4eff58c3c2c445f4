"""Names contracts and the settings file give: partner ids and environment variables."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator


def matching(pattern: str, message: str, *, echo: bool = True) -> AfterValidator:
    """`echo=False` for fields a secret gets pasted into by mistake (a token where its
    variable's name belongs): the value must not reach a terminal, a log line or an answer."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} {message}" if echo else message)
        return value

    return AfterValidator(check)


PartnerId = Annotated[
    str,
    matching(
        r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?",
        "must be 1-64 lower-case letters, digits and -, not starting or ending with -",
    ),
]
EnvName = Annotated[
    str,
    matching(
        r"[A-Z_][A-Z0-9_]*",
        "must be an environment variable name ([A-Z_][A-Z0-9_]*)",
        echo=False,
    ),
]
