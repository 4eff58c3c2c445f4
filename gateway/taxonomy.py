"""Data categories: the built-in taxonomy, which ones are sensitive, and `_taxonomy.yaml`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator

from gateway.contract import Problem, file_problems, schema_problems
from gateway.yamlfile import YamlFileError, read_yaml_file

TAXONOMY_FILE = "_taxonomy.yaml"
_TAXONOMY_NAMES = frozenset({"_taxonomy.yaml", "_taxonomy.yml"})  # in any case

CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")

# Every category in these groups is sensitive personal information, including names a
# `_taxonomy.yaml` adds to them.
SENSITIVE_GROUPS = frozenset({"biometric", "religion", "health", "location"})
# Not personal information: needs no place in a contract's `categories`. Closed to additions,
# since a name added here would take personal data out of every check.
NON_PERSONAL_GROUPS = frozenset({"business"})
# Credentials: no contract may name them, with or without a transform.
NEVER_SHAREABLE = frozenset({"account.password"})


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    sensitive: bool
    description: str = ""

    @property
    def group(self) -> str:
        return self.name.partition(".")[0]

    @property
    def shareable(self) -> bool:
        return self.name not in NEVER_SHAREABLE

    @property
    def personal(self) -> bool:
        return self.group not in NON_PERSONAL_GROUPS


def _builtin(*entries: tuple[str, bool, str]) -> Mapping[str, Category]:
    return MappingProxyType(
        {name: Category(name, sensitive, description) for name, sensitive, description in entries}
    )


BUILTIN_CATEGORIES = _builtin(
    ("identity.name", False, "a person's name"),
    ("identity.id_number", True, "resident identity card number"),
    ("identity.passport", True, "passport number"),
    ("identity.birth_date", False, "date of birth"),
    ("identity.gender", False, "gender"),
    ("identity.credit_code", False, "unified social credit code of an organisation"),
    ("contact.phone", False, "phone number"),
    ("contact.email", False, "email address"),
    ("contact.address", False, "postal address"),
    ("account.user_id", False, "platform user id"),
    ("account.username", False, "user name"),
    ("account.password", False, "password or other credential (never shareable)"),
    ("financial.income", False, "income"),
    ("financial.payment", True, "payment details"),
    ("financial.bank_account", True, "bank account or card number"),
    ("financial.credit_record", True, "credit history"),
    ("device.ip", False, "IP address"),
    ("device.device_id", False, "device identifier"),
    ("device.device_info", False, "device model, operating system, settings"),
    ("activity.login_log", False, "login records"),
    ("activity.operation_log", False, "operation records and error logs"),
    ("activity.browsing_log", False, "browsing history"),
    ("communication.message", False, "chat message content"),
    ("communication.call_record", False, "call records"),
    ("file.content", False, "content of stored files"),
    ("file.access_log", False, "file access records"),
    ("meeting.participation", False, "meeting participation"),
    ("organization.company", False, "employer"),
    ("organization.position", False, "job title"),
    ("biometric.face", True, "facial features"),
    ("biometric.fingerprint", True, "fingerprint"),
    ("biometric.voiceprint", True, "voiceprint"),
    ("religion.belief", True, "religious belief"),
    ("health.record", True, "medical and health information"),
    ("location.trajectory", True, "movement trajectory"),
    ("location.precise", True, "precise location"),
    ("business.transaction", False, "transaction details (not personal information)"),
    ("business.reference", False, "business references and identifiers (not personal)"),
    ("business.note", False, "business notes (not personal information)"),
)


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """The categories a contract may name. Questions about an unknown name get the cautious
    answer (sensitive, personal, not shareable); validation reports unknown names on their own.
    """

    categories: Mapping[str, Category]

    def known(self, name: str) -> bool:
        return name in self.categories

    def sensitive(self, name: str) -> bool:
        category = self.categories.get(name)
        return category is None or category.sensitive

    def shareable(self, name: str) -> bool:
        category = self.categories.get(name)
        return category is not None and category.shareable

    def personal(self, name: str) -> bool:
        category = self.categories.get(name)
        return category is None or category.personal


BUILTIN_TAXONOMY = Taxonomy(BUILTIN_CATEGORIES)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sensitive: StrictBool | None = None
    description: str | None = None

    @field_validator("sensitive", mode="before")
    @classmethod
    def _sensitive_written(cls, value: object) -> object:
        if value is None:
            # `sensitive:` with nothing after it reads as null: taken as no such key, a name
            # the author was marking sensitive was shared as an ordinary category.
            raise ValueError("empty: write true or false, or remove the key")
        return value


class _TaxonomyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    categories: tuple[_Entry, ...] = ()


def load_taxonomy(contracts_dir: Path) -> tuple[Taxonomy, list[Problem]]:
    """The built-in taxonomy extended by `contracts_dir/_taxonomy.yaml`, if there is one.

    The taxonomy returned holds every valid entry even when others are wrong, so contracts can
    still be checked against it and all problems reported in one run.
    """
    # A taxonomy under a near name would be skipped, and the categories it marks sensitive
    # taken for ordinary ones: such a file is a problem, as is a `_taxonomy.yaml` that is no
    # regular file (read, it is reported).
    problems = [
        Problem(
            str(entry),
            "",
            f"not read: the taxonomy must be named exactly {TAXONOMY_FILE} (rename this file)",
        )
        for entry in sorted(contracts_dir.iterdir())
        if entry.name.lower() in _TAXONOMY_NAMES and entry.name != TAXONOMY_FILE
    ]
    path = contracts_dir / TAXONOMY_FILE
    if not os.path.lexists(path):
        return BUILTIN_TAXONOMY, problems
    taxonomy, found = _read_taxonomy(path)
    return taxonomy, problems + file_problems(str(path), found)


def _read_taxonomy(path: Path) -> tuple[Taxonomy, list[tuple[str, str]]]:
    try:
        data, _ = read_yaml_file(path)
    except YamlFileError as exc:
        return BUILTIN_TAXONOMY, exc.problems
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return BUILTIN_TAXONOMY, [("", "the top level must be a mapping")]
    try:
        parsed = _TaxonomyFile.model_validate(data)
    except ValidationError as exc:
        return BUILTIN_TAXONOMY, schema_problems(exc)

    categories = dict(BUILTIN_CATEGORIES)
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, entry in enumerate(parsed.categories):
        where = f"categories.{index}"
        message = _entry_problem(entry, seen)
        seen.add(entry.name)
        if message is not None:
            problems.append((where, message))
            continue
        current = categories.get(entry.name)
        sensitive = (
            entry.sensitive is True
            or (current is not None and current.sensitive)
            or entry.name.partition(".")[0] in SENSITIVE_GROUPS
        )
        description = entry.description or (current.description if current else "")
        categories[entry.name] = Category(entry.name, sensitive, description)
    return Taxonomy(MappingProxyType(categories)), problems


def _entry_problem(entry: _Entry, seen: set[str]) -> str | None:
    name = entry.name
    group = name.partition(".")[0]
    if not CATEGORY_NAME.fullmatch(name):
        return f"{name!r} must be written group.name (lower-case letters, digits and _)"
    if name in seen:
        return f"{name} is listed twice"
    if name in NEVER_SHAREABLE:
        return f"{name} is built in and may not be changed"
    if group in NON_PERSONAL_GROUPS:
        return (
            f"{group} categories are exempt from the data-scope checks and may not be extended; "
            "add the name to a personal-data group"
        )
    builtin = BUILTIN_CATEGORIES.get(name)
    if entry.sensitive is False and builtin is not None and builtin.sensitive:
        return f"{name} is sensitive and may not be un-marked"
    if entry.sensitive is False and group in SENSITIVE_GROUPS:
        return f"{name} is in the sensitive group {group}: its categories are always sensitive"
    return None
