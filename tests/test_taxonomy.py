from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.taxonomy import BUILTIN_TAXONOMY, Category, Taxonomy, load_taxonomy

SENSITIVE = {
    "identity.id_number",
    "identity.passport",
    "financial.payment",
    "financial.bank_account",
    "financial.credit_record",
    "biometric.face",
    "biometric.fingerprint",
    "biometric.voiceprint",
    "religion.belief",
    "health.record",
    "location.trajectory",
    "location.precise",
}


def load(tmp_path: Path, text: str) -> tuple[Taxonomy, list[str]]:
    (tmp_path / "_taxonomy.yaml").write_text(text, encoding="utf-8")
    taxonomy, problems = load_taxonomy(tmp_path)
    return taxonomy, [str(problem) for problem in problems]


def test_builtin_categories_match_the_agreement() -> None:
    assert len(BUILTIN_TAXONOMY.categories) == 39
    assert {name for name in BUILTIN_TAXONOMY.categories if BUILTIN_TAXONOMY.sensitive(name)} == (
        SENSITIVE
    )
    groups = {name.partition(".")[0] for name in BUILTIN_TAXONOMY.categories}
    assert groups == {
        "identity",
        "contact",
        "account",
        "financial",
        "device",
        "activity",
        "communication",
        "file",
        "meeting",
        "organization",
        "biometric",
        "religion",
        "health",
        "location",
        "business",
    }


def test_password_is_known_but_never_shareable() -> None:
    assert BUILTIN_TAXONOMY.known("account.password")
    assert not BUILTIN_TAXONOMY.shareable("account.password")
    assert BUILTIN_TAXONOMY.shareable("account.user_id")
    assert [n for n in BUILTIN_TAXONOMY.categories if not BUILTIN_TAXONOMY.shareable(n)] == [
        "account.password"
    ]


def test_business_categories_are_not_personal() -> None:
    not_personal = [n for n in BUILTIN_TAXONOMY.categories if not BUILTIN_TAXONOMY.personal(n)]
    assert not_personal == ["business.transaction", "business.reference", "business.note"]
    assert not BUILTIN_TAXONOMY.sensitive("business.transaction")


def test_unknown_categories_get_the_cautious_answers() -> None:
    assert not BUILTIN_TAXONOMY.known("identity.shoe_size")
    assert BUILTIN_TAXONOMY.sensitive("identity.shoe_size")
    assert BUILTIN_TAXONOMY.personal("identity.shoe_size")
    assert not BUILTIN_TAXONOMY.shareable("identity.shoe_size")


def test_category_knows_its_group() -> None:
    category = BUILTIN_TAXONOMY.categories["health.record"]
    assert category == Category("health.record", True, "medical and health information")
    assert category.group == "health"


def test_no_file_means_the_builtin_taxonomy(tmp_path: Path) -> None:
    assert load_taxonomy(tmp_path) == (BUILTIN_TAXONOMY, [])


def test_empty_file_adds_nothing(tmp_path: Path) -> None:
    assert load(tmp_path, "") == (BUILTIN_TAXONOMY, [])
    assert load(tmp_path, "categories: []\n") == (BUILTIN_TAXONOMY, [])


def test_adding_names_to_existing_and_new_groups(tmp_path: Path) -> None:
    taxonomy, problems = load(
        tmp_path,
        "categories:\n"
        "  - {name: contact.wechat_id, description: WeChat account}\n"
        "  - {name: workspace.desk_booking}\n"
        "  - {name: workspace.badge_photo, sensitive: true}\n",
    )
    assert problems == []
    assert taxonomy.categories["contact.wechat_id"] == Category(
        "contact.wechat_id", False, "WeChat account"
    )
    assert taxonomy.known("workspace.desk_booking")
    assert not taxonomy.sensitive("workspace.desk_booking")
    assert taxonomy.personal("workspace.desk_booking")
    assert taxonomy.shareable("workspace.desk_booking")
    assert taxonomy.sensitive("workspace.badge_photo")
    assert len(taxonomy.categories) == 42
    # The built-in taxonomy itself is untouched.
    assert not BUILTIN_TAXONOMY.known("workspace.desk_booking")


def test_marking_an_existing_category_sensitive(tmp_path: Path) -> None:
    taxonomy, problems = load(
        tmp_path, "categories:\n  - {name: contact.address, sensitive: true}\n"
    )
    assert problems == []
    assert taxonomy.sensitive("contact.address")
    assert taxonomy.categories["contact.address"].description == "postal address"


def test_redescribing_a_sensitive_category_keeps_it_sensitive(tmp_path: Path) -> None:
    taxonomy, problems = load(
        tmp_path, "categories:\n  - {name: health.record, description: sick-leave notes}\n"
    )
    assert problems == []
    assert taxonomy.categories["health.record"] == Category(
        "health.record", True, "sick-leave notes"
    )


def test_new_names_in_sensitive_groups_are_sensitive(tmp_path: Path) -> None:
    taxonomy, problems = load(tmp_path, "categories:\n  - {name: biometric.iris}\n")
    assert problems == []
    assert taxonomy.sensitive("biometric.iris")


def test_un_marking_a_sensitive_category_is_refused(tmp_path: Path) -> None:
    taxonomy, problems = load(
        tmp_path, "categories:\n  - {name: identity.id_number, sensitive: false}\n"
    )
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0: identity.id_number is sensitive and may "
        "not be un-marked"
    ]
    assert taxonomy.sensitive("identity.id_number")


def test_an_empty_sensitive_is_refused_not_read_as_ordinary(tmp_path: Path) -> None:
    # `sensitive:   # pending legal` is YAML null: it read as not sensitive, and the category
    # was shared without the consent and assessment a sensitive one needs.
    taxonomy, problems = load(
        tmp_path, "categories:\n  - {name: workspace.badge_photo, sensitive: }\n"
    )
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0.sensitive: empty: write true or false, "
        "or remove the key"
    ]
    assert taxonomy.sensitive("workspace.badge_photo")  # unknown: the cautious answer


def test_non_sensitive_name_in_a_sensitive_group_is_refused(tmp_path: Path) -> None:
    taxonomy, problems = load(tmp_path, "categories:\n  - {name: health.steps, sensitive: false}\n")
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0: health.steps is in the sensitive group "
        "health: its categories are always sensitive"
    ]
    assert not taxonomy.known("health.steps")


def test_adding_to_business_is_refused(tmp_path: Path) -> None:
    taxonomy, problems = load(tmp_path, "categories:\n  - {name: business.customer_name}\n")
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0: business categories are exempt from the "
        "data-scope checks and may not be extended; add the name to a personal-data group"
    ]
    assert not taxonomy.known("business.customer_name")


def test_redefining_a_business_category_is_refused(tmp_path: Path) -> None:
    _, problems = load(tmp_path, "categories:\n  - {name: business.note, sensitive: true}\n")
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0: business categories are exempt from the "
        "data-scope checks and may not be extended; add the name to a personal-data group"
    ]


@pytest.mark.parametrize("sensitive", ["true", "false"])
def test_password_may_not_be_touched(tmp_path: Path, sensitive: str) -> None:
    taxonomy, problems = load(
        tmp_path, f"categories:\n  - {{name: account.password, sensitive: {sensitive}}}\n"
    )
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0: account.password is built in and may "
        "not be changed"
    ]
    assert not taxonomy.shareable("account.password")


@pytest.mark.parametrize("name", ["contact", "Contact.wechat", "contact.we-chat", "a.b.c", "1x.y"])
def test_names_must_be_group_dot_name(tmp_path: Path, name: str) -> None:
    _, problems = load(tmp_path, f"categories:\n  - {{name: '{name}'}}\n")
    assert problems == [
        f"{tmp_path / '_taxonomy.yaml'}: categories.0: {name!r} must be written group.name "
        "(lower-case letters, digits and _)"
    ]


def test_every_problem_is_reported_and_valid_entries_still_apply(tmp_path: Path) -> None:
    taxonomy, problems = load(
        tmp_path,
        "categories:\n"
        "  - {name: contact.wechat_id}\n"
        "  - {name: contact.wechat_id}\n"
        "  - {name: religion.belief, sensitive: false}\n"
        "  - {name: workspace.desk}\n",
    )
    file = tmp_path / "_taxonomy.yaml"
    assert problems == [
        f"{file}: categories.1: contact.wechat_id is listed twice",
        f"{file}: categories.2: religion.belief is sensitive and may not be un-marked",
    ]
    assert taxonomy.known("contact.wechat_id")
    assert taxonomy.known("workspace.desk")


def test_schema_errors(tmp_path: Path) -> None:
    _, problems = load(
        tmp_path,
        "categories:\n  - {name: workspace.desk, sensitive: maybe, colour: red}\nextra: 1\n",
    )
    file = tmp_path / "_taxonomy.yaml"
    assert problems == [
        f"{file}: categories.0.sensitive: Input should be a valid boolean",
        f"{file}: categories.0.colour: unknown key",
        f"{file}: extra: unknown key",
    ]


def test_yaml_problems(tmp_path: Path) -> None:
    file = tmp_path / "_taxonomy.yaml"
    _, problems = load(tmp_path, "categories: []\ncategories: []\n")
    assert problems == [f"{file}: categories: duplicate key 'categories' (line 2; first on line 1)"]
    _, problems = load(tmp_path, "- contact.wechat\n")
    assert problems == [f"{file}: the top level must be a mapping"]


def test_problems_past_fifty_are_counted_not_listed(tmp_path: Path) -> None:
    entries = "".join(f"  - {{name: Bad{n}}}\n" for n in range(70))
    _, problems = load(tmp_path, "categories:\n" + entries)
    assert len(problems) == 51
    assert problems[-1] == f"{tmp_path / '_taxonomy.yaml'}: and 20 more problem(s) in this file"


@pytest.mark.parametrize(
    "name", ["_taxonomy.yml", "_taxonomy.YAML", "_Taxonomy.yaml", "_TAXONOMY.YML", "_taxonomy.Yml"]
)
def test_a_near_name_is_a_problem_beside_the_real_file_too(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("categories: []\n", encoding="utf-8")
    (tmp_path / "_taxonomy.yaml").write_text(
        "categories: [{name: workspace.desk}]\n", encoding="utf-8"
    )
    taxonomy, problems = load_taxonomy(tmp_path)
    assert [str(p) for p in problems] == [
        f"{tmp_path / name}: not read: the taxonomy must be named exactly _taxonomy.yaml "
        "(rename this file)"
    ]
    assert taxonomy.known("workspace.desk")


def test_other_names_are_not_taken_for_the_taxonomy(tmp_path: Path) -> None:
    for name in ["_taxonomy.yaml.bak", "_taxonomy.json", "_taxonomies.yaml", "_draft.yaml"]:
        (tmp_path / name).write_text("categories: []\n", encoding="utf-8")
    assert load_taxonomy(tmp_path) == (BUILTIN_TAXONOMY, [])


@pytest.mark.parametrize("kind", ["dangling symlink", "directory", "fifo"])
def test_a_taxonomy_that_is_no_regular_file_is_a_problem(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "_taxonomy.yaml"
    if kind == "dangling symlink":
        path.symlink_to(tmp_path / "missing.yaml")
        message = "a symbolic link to a file that does not exist"
    elif kind == "directory":
        path.mkdir()
        message = "not a regular file but a directory: nothing was read"
    else:
        os.mkfifo(path)
        message = "not a regular file but a FIFO: nothing was read"
    taxonomy, problems = load_taxonomy(tmp_path)
    assert taxonomy == BUILTIN_TAXONOMY
    assert [str(p) for p in problems] == [f"{path}: {message}"]
