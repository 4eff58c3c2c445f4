"""Contract files: strict YAML reading and the schema of one partner's contract."""

from __future__ import annotations

import os
import re
import stat
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)

if TYPE_CHECKING:
    from gateway.transforms import Transform


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one file, located by its key path (`routes.0.fields.2.category`)."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        if not self.path:
            return printable(f"{self.file}: {self.message}")
        return printable(f"{self.file}: {self.path}: {self.message}")


# Control and format characters, line and paragraph separators, and lone surrogates: what
# would split one problem's line, rewrite the terminal showing it, or fail to print at all.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """`text` with each unprintable character escaped as Python writes it (`\\n`, `\\x1b`,
    `\\ud800`): a key or value of a file reaches a problem line as the file has it."""
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _UNPRINTABLE else c for c in text)


# A broken file can hold thousands of problems (one per field rule): the first ones say what is
# wrong, and every problem is a line of `contracts validate`, of the reload log line and of the
# admin API's answer, so the rest are counted instead.
MAX_PROBLEMS_PER_FILE = 50


def file_problems(file: str, found: Sequence[tuple[str, str]]) -> list[Problem]:
    """`found` (key path, message) as problems of `file`: the first `MAX_PROBLEMS_PER_FILE`,
    then one saying how many more there are."""
    problems = [Problem(file, where, message) for where, message in found[:MAX_PROBLEMS_PER_FILE]]
    if len(found) > MAX_PROBLEMS_PER_FILE:
        more = len(found) - MAX_PROBLEMS_PER_FILE
        problems.append(Problem(file, "", f"and {more} more problem(s) in this file"))
    return problems


# ---------------------------------------------------------------------------------------------
# Strict YAML


class YamlFileError(Exception):
    """A file could not be read as strict YAML; `problems` are (key path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


_MERGE_TAG = "tag:yaml.org,2002:merge"

# Every scalar, list and mapping counts, each alias as what it stands for. The bundled
# contracts hold about 200 each (3 KB), a 1 MiB file written like them about 70,000; a few KB
# of aliases, though, can stand for millions (each one checked, each a problem line): seconds
# and gigabytes of work. 100,000 leaves room for any contract and stops the blow-up.
MAX_NODES = 100_000
# Flow collections (`[...]`, `{...}`) inside one another: the bundled contracts nest 3 deep
# (`{path: p, transform: {mask: {keep_last: 4}}}`).
MAX_FLOW_DEPTH = 16
# An upstream's `timeout_s` at most: a restart looks this far back for shares still going out.
MAX_UPSTREAM_TIMEOUT_S: Final = 300


class StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`, refusing duplicate mapping keys and keys merged from two mappings.

    A contract with two `fields:` keys under one route is ambiguous (YAML keeps the last one
    silently), so the whole document is checked before anything is built from it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # Values read so far, each alias counted as the value it stands for.
        self._values = 0
        # What each anchored value counts, once read: an alias to it adds that many.
        self._anchored_values: dict[str | None, int] = {}
        # The lists and mappings being read: the count before each, and its anchor.
        self._open: list[tuple[int, str | None]] = []

    def get_event(self) -> yaml.Event:
        # Counted as the document is read, not once it is all parsed: a MiB of `[1, 1, ...]`
        # is seconds of parsing, most of them past the cap. Here, as the composer takes each
        # event: in its recursive `compose_node`, a frame more for each level of nesting would
        # refuse as nested too deeply files read before.
        event: yaml.Event = super().get_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # else the composer refuses the alias as undefined
                size = self._anchored_values.get(event.anchor)
                if size is None:
                    # Its anchor is still open: a value containing itself, nothing a contract
                    # means, and endless to whatever walks it.
                    raise YamlFileError(
                        [
                            (
                                "",
                                f"the value at line {target.start_mark.line + 1} contains "
                                "itself through an alias: no contract or settings file is "
                                "recursive",
                            )
                        ]
                    )
                self._count(size, event)
        elif isinstance(event, yaml.NodeEvent):
            start = self._values
            self._count(1, event)
            if isinstance(event, yaml.CollectionStartEvent):
                self._open.append((start, event.anchor))
            elif event.anchor is not None:
                self._anchored_values[event.anchor] = 1
        elif isinstance(event, yaml.CollectionEndEvent):
            start, anchor = self._open.pop()
            if anchor is not None:
                self._anchored_values[anchor] = self._values - start
        return event

    def _count(self, values: int, event: yaml.Event) -> None:
        self._values += values
        if self._values > MAX_NODES:
            mark = event.start_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise YamlFileError(
                [
                    (
                        "",
                        f"more than {MAX_NODES} values, counting each alias as the value it "
                        f"stands for (reached{where}): a contract or the settings file "
                        "needs far fewer",
                    )
                ]
            )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
            # The safe constructors' own errors (`2027-02-30`, `!!int three`) carry no mark.
            # Problems reach logs and API answers, and a value may be a secret pasted in the
            # wrong place: the place is said, never the value (nor a reason that repeats it).
            # Python's reasons end in the value (`invalid literal for int() with base 10: 'x'`).
            why = str(exc).split(": ", 1)[0] if isinstance(exc, ValueError | OverflowError) else ""
            if isinstance(node, yaml.ScalarNode) and str(node.value).casefold() in why.casefold():
                why = ""
            what = f"cannot read {node.tag.rsplit(':', 1)[-1]}" + (f": {why}" if why else "")
            raise yaml.constructor.ConstructorError(None, None, what, node.start_mark) from exc

    def fetch_flow_collection_start(self, TokenClass: type[yaml.Token]) -> None:
        # PyYAML's scanner looks at every open `[` or `{` once per token it reads: a few KB of
        # brackets nested hundreds deep take seconds, a file of such lines minutes.
        if self.flow_level >= MAX_FLOW_DEPTH:
            raise yaml.scanner.ScannerError(
                None,
                None,
                f"[...] and {{...}} nested more than {MAX_FLOW_DEPTH} deep: a contract or the "
                "settings file needs a few levels",
                self.get_mark(),
            )
        super().fetch_flow_collection_start(TokenClass)

    def scan_plain(self) -> yaml.ScalarToken:
        # SPEC.md's contracts write `{path: reasons[].code}`. Inside `{...}` or `[...]` YAML ends
        # a plain scalar at `[`, and a `[]` right after its text is then a syntax error, never
        # another reading: so it is read as part of the path, and no valid file changes meaning.
        # A `#` after it would start a comment only here, so that spelling stays an error.
        token = super().scan_plain()
        if not self.flow_level:
            return token
        value, end_mark = token.value, token.end_mark
        while (
            value
            and self.index == end_mark.index
            and self.prefix(2) == "[]"
            and self.peek(2) != "#"
        ):
            self.forward(2)
            rest = super().scan_plain()
            value += "[]" + rest.value
            end_mark = rest.end_mark
        return yaml.ScalarToken(value, True, token.start_mark, end_mark)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        # YAML 1.1 reads 030 as 24 (octal), 1:30 as 90 (base 60), 0x1e as 30: a contract's
        # numbers are written in decimal, and any other reading changes what it agreed.
        digits = str(node.value).replace("_", "").lstrip("+-")
        if ":" in digits or (len(digits) > 1 and digits[0] == "0"):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a number not written in decimal (YAML reads it as octal, hexadecimal, binary or "
                "base 60): write it in decimal, without leading zeros",
                node.start_mark,
            )
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        if ":" in str(node.value):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a base-60 number in YAML: write it in decimal",
                node.start_mark,
            )
        return super().construct_yaml_float(node)

    # The keys of each mapping with its merges applied, by node: see `_mapping_keys`.
    _keys_of: dict[int, dict[object, tuple[yaml.Node, yaml.Node]]]

    def construct_document(self, node: yaml.Node) -> Any:
        self._keys_of = {}
        duplicates = list(self._duplicate_keys(node, (), set()))
        if duplicates:
            raise YamlFileError(duplicates)
        return super().construct_document(node)

    def _duplicate_keys(
        self, node: yaml.Node, path: tuple[str, ...], seen_nodes: set[int]
    ) -> Iterator[tuple[str, str]]:
        # Aliases make the node graph shared (even cyclic): visit each node once.
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                yield from self._duplicate_keys(item, (*path, str(index)), seen_nodes)
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[object, int] = {}
            merges = [k for k, _ in node.value if k.tag == _MERGE_TAG]
            if len(merges) > 1:
                # YAML keeps one of them silently, as with any other repeated key.
                yield (
                    ".".join(path),
                    f"more than one merge key << (line {merges[1].start_mark.line + 1}): "
                    "merge several with one `<<: [*a, *b]`",
                )
            for key_node, value_node in node.value:
                child = path
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = self.construct_object(key_node)
                    child = (*path, str(key))
                    line = key_node.start_mark.line + 1
                    if key in first_line:
                        yield (
                            ".".join(child),
                            f"duplicate key {key!r} (line {line}; first on line {first_line[key]})",
                        )
                    else:
                        first_line[key] = line
                yield from self._duplicate_keys(value_node, child, seen_nodes)
            yield from self._merge_collisions(node, path, first_line)

    def _merge_collisions(
        self, node: yaml.MappingNode, path: tuple[str, ...], explicit: dict[object, int]
    ) -> Iterator[tuple[str, str]]:
        # YAML gives a key found in several merged mappings the value of the first one; PyYAML
        # (6.0.x) gives it the last one's. Either reading would surprise someone, and in a
        # contract the surprise is data shared: such a key must be written out in the mapping.
        for merge_key, merge_value in node.value:
            if merge_key.tag != _MERGE_TAG:
                continue
            supplied: dict[object, tuple[yaml.Node, yaml.Node]] = {}
            for source in _merge_sources(merge_value):
                for key, pair in self._mapping_keys(source, set()).items():
                    if key in explicit:
                        continue  # a key written in the mapping itself wins over every merge
                    first = supplied.setdefault(key, pair)
                    if not _same_value(first[1], pair[1]):
                        yield (
                            ".".join((*path, str(key))),
                            f"key {key!r} is merged from more than one mapping (line "
                            f"{merge_key.start_mark.line + 1} merges it from lines "
                            f"{first[0].start_mark.line + 1} and {pair[0].start_mark.line + 1}): "
                            "write it in this mapping, or merge only one mapping that has it",
                        )

    def _mapping_keys(
        self, node: yaml.MappingNode, visiting: set[int]
    ) -> dict[object, tuple[yaml.Node, yaml.Node]]:
        """Every key a mapping has once its merges are applied, with the pair that wrote it."""
        known = self._keys_of.get(id(node))
        if known is not None:
            return known
        if id(node) in visiting:
            return {}  # a cycle, refused before this runs (see `get_event`)
        visiting.add(id(node))
        own: dict[object, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[object, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in _merge_sources(value_node):
                    for key, pair in self._mapping_keys(source, visiting).items():
                        merged.setdefault(key, pair)
            elif isinstance(key_node, yaml.ScalarNode):
                own.setdefault(self.construct_object(key_node), (key_node, value_node))
        visiting.discard(id(node))
        # Memoised: a mapping merged into many others is looked at once per document.
        self._keys_of[id(node)] = keys = {**merged, **own}
        return keys


def _same_value(one: yaml.Node, other: yaml.Node) -> bool:
    # One node reached through two merges (a diamond), or the same text (`method: POST` in
    # both): whichever wins, the mapping reads the same.
    if one is other:
        return True
    return (
        isinstance(one, yaml.ScalarNode)
        and isinstance(other, yaml.ScalarNode)
        and (one.tag, one.value) == (other.tag, other.value)
    )


def _merge_sources(value: yaml.Node) -> list[yaml.MappingNode]:
    # Anything else after `<<` is left to the constructor, which refuses it with its place.
    candidates = value.value if isinstance(value, yaml.SequenceNode) else [value]
    return [node for node in candidates if isinstance(node, yaml.MappingNode)]


_YAML_TAG = "tag:yaml.org,2002:"
# What a contract or taxonomy is written with. Every other type is refused, even those the
# safe loader knows: `!!binary` hides a value from whoever reviews the file (and pydantic takes
# the bytes as text), `!!set`, `!!omap` and `!!pairs` build what no schema here expects.
_CORE_TAGS = frozenset(
    _YAML_TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map")
)


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"the tag !!{node.tag.removeprefix(_YAML_TAG)} is not accepted: write the value itself "
        "(text, a number, a date, true/false, null, a list or a mapping)",
        node.start_mark,
    )


# Only the core constructors; `None` is PyYAML's own refusal of a tag it does not know.
StrictLoader.yaml_constructors = {
    tag: constructor
    for tag, constructor in yaml.SafeLoader.yaml_constructors.items()
    if tag is None or tag in _CORE_TAGS
}
for _tag in ("binary", "set", "omap", "pairs"):
    StrictLoader.add_constructor(_YAML_TAG + _tag, _refuse_tag)
StrictLoader.add_constructor(_YAML_TAG + "int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor(_YAML_TAG + "float", StrictLoader.construct_yaml_float)


# PyYAML quotes with repr(): in single quotes, or in double quotes around an apostrophe.
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def _unquoted(match: re.Match[str]) -> str:
    quoted = match[1] if match[1] is not None else match[2]
    # Token kinds (`<scalar>`), punctuation and escapes (`\t`) say nothing of the file.
    keep = quoted.startswith("<") or re.fullmatch(r"[\W_]*|\\[a-z0-9]+", quoted) is not None
    return match[0] if keep else "'…'"


def load_yaml(text: str) -> object:
    """Parse one YAML document with `StrictLoader`; raise `YamlFileError` on any problem."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "unreadable"
        hint = what.endswith(("but got '['", "but got ']'"))
        # The parser quotes what it found: an alias or a tag name, a token, any of which may be
        # a secret typed in the wrong place. Token kinds (`'<scalar>'`) and punctuation stay.
        what = _QUOTED.sub(_unquoted, what)
        if hint:
            what += ' (inside {...} write a path as one word, or quote it: {path: "items[].id"})'
        raise YamlFileError([("", f"not valid YAML{where}: {what}")]) from exc
    except yaml.reader.ReaderError as exc:
        # Its own text is two lines and names no line; the position is in characters.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise YamlFileError(
            [
                (
                    "",
                    f"not valid YAML at line {line}, column {column}: character "
                    f"#x{exc.character:04x} is not allowed",
                )
            ]
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlFileError([("", f"not valid YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise YamlFileError([("", "not valid YAML: nested too deeply")]) from exc


# A contract is a few KB. Past this size a file is not read at all: parsing takes seconds a MiB.
MAX_FILE_BYTES = 1024 * 1024
_TOO_BIG = (
    f"larger than {MAX_FILE_BYTES} bytes (1 MiB): a contract or the settings file is a few KB"
)


def read_yaml_file(path: Path) -> tuple[object, bytes]:
    """The parsed document and the exact bytes it came from (for the contract's digest)."""
    raw = _read_file(path)
    return parse_yaml_bytes(raw), raw


def parse_yaml_bytes(raw: bytes) -> object:
    """`load_yaml` of UTF-8 bytes of at most MAX_FILE_BYTES; YamlFileError otherwise."""
    if len(raw) > MAX_FILE_BYTES:
        raise YamlFileError([("", _TOO_BIG)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            [("", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})")]
        ) from exc
    return load_yaml(text)


# A file rewritten in place (truncated, then written) may be read half-written, and a prefix of
# a contract is often a valid contract with a route or a response filter missing. A read is
# kept only if the file stayed the same throughout; otherwise it is tried again, a few times.
READ_ATTEMPTS = 3
READ_RETRY_PAUSE_S = 0.05


def _read_file(path: Path) -> bytes:
    for attempt in range(READ_ATTEMPTS):
        if attempt:
            time.sleep(READ_RETRY_PAUSE_S)
        raw, settled = _read_once(path)
        if settled:
            return raw
    raise YamlFileError(
        [
            (
                "",
                "the file changed while it was read; replace contract files by renaming a "
                "complete file into place",
            )
        ]
    )


def _read_once(path: Path) -> tuple[bytes, bool]:
    """The file's bytes, and whether it stayed the same file, unchanged, while they were read."""
    try:
        # Checked before opening too: opening a FIFO waits for a writer, a device may act.
        _require_regular(os.stat(path))
        # Non-blocking, should a FIFO have taken the file's place since: fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            before = os.fstat(fd)
            _require_regular(before)
            # One byte past the limit: a file that grew since the fstat is caught too.
            too_big = before.st_size > MAX_FILE_BYTES
            raw = b"" if too_big else _read_fd(fd, MAX_FILE_BYTES + 1)
            # The name, not the descriptor: a file renamed into place meanwhile is read next.
            after = os.stat(path)
        finally:
            os.close(fd)
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise YamlFileError([("", "a symbolic link to a file that does not exist")]) from exc
        raise YamlFileError([("", f"cannot read: {exc.strerror or exc}")]) from exc
    except OSError as exc:
        raise YamlFileError([("", f"cannot read: {exc.strerror or exc}")]) from exc
    if too_big or len(raw) > MAX_FILE_BYTES:
        raise YamlFileError(
            [
                (
                    "",
                    _TOO_BIG,
                )
            ]
        )
    return raw, len(raw) == before.st_size and _version(before) == _version(after)


def _version(status: os.stat_result) -> tuple[int, ...]:
    # ctime as well as mtime: a writer can set mtime back (`cp -p`, `touch -r`), never ctime.
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _require_regular(status: os.stat_result) -> None:
    if stat.S_ISREG(status.st_mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(status.st_mode)), "special")
    raise YamlFileError([("", f"not a regular file but {kind}: nothing was read")])


def _read_fd(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes, to the end of the file."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# Schema errors as key paths

_PLAIN_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
}

# Discriminated unions put the tag they chose into an error's location
# (`upstream.auth.bearer.token_env`); the file has no such key, so it is dropped.
_UNION_TAGS: dict[tuple[str, str], frozenset[str]] = {
    ("upstream", "auth"): frozenset({"none", "bearer", "basic", "header"}),
}


def schema_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic errors as (key path, message), paths written the way the file is."""
    return [(".".join(_file_path(error["loc"])), _message(error)) for error in exc.errors()]


def _file_path(loc: tuple[int | str, ...]) -> list[str]:
    out: list[str] = []
    tags: frozenset[str] = frozenset()
    for part in map(str, loc):
        if part in tags:
            # Only the element right after the union field can be its tag.
            tags = frozenset()
            continue
        out.append(part)
        tags = _UNION_TAGS.get((out[-2], out[-1]), frozenset()) if len(out) >= 2 else frozenset()
    return out


def _message(error: Any) -> str:
    kind = error["type"]
    if kind in _PLAIN_MESSAGES:
        return _PLAIN_MESSAGES[kind]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


# ---------------------------------------------------------------------------------------------
# Value types


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (`"\ud800"` in YAML): no share record could ever hold it.
        raise ValueError("is not text: it holds a lone surrogate") from None
    return value


NonBlank = Annotated[str, AfterValidator(_non_blank)]
_INT64_MAX = 2**63 - 1  # what SQLite stores as an integer
MIN_RATE_PER_S: Final = 1 / 86400  # one share a day: the least rate a contract may agree

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calendar_date(value: object) -> object:
    # Lax pydantic would read 20250101 as a Unix timestamp; a contract date is a calendar day.
    if isinstance(value, datetime):
        raise ValueError("must be a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value} is not a day of the calendar") from None
    raise ValueError("must be a date (YYYY-MM-DD)")


CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]


def _matching(pattern: str, message: str, *, echo: bool = True) -> AfterValidator:
    """`echo=False` for fields a secret gets pasted into by mistake (a token where its
    variable's name belongs): the value must not reach a terminal, a log line or an answer."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value!r} {message}" if echo else message)
        return value

    return AfterValidator(check)


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    # A length check of its own, so a list whose every item is invalid is not also "empty".
    if not value:
        raise ValueError("must not be empty")
    return value


PartnerId = Annotated[
    str,
    _matching(
        r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?",
        "must be 1-64 lower-case letters, digits and -, not starting or ending with -",
    ),
]
EnvName = Annotated[
    str,
    _matching(
        r"[A-Z_][A-Z0-9_]*",
        "must be an environment variable name ([A-Z_][A-Z0-9_]*)",
        echo=False,
    ),
]
Purpose = Annotated[str, _matching(r"[a-z][a-z0-9_]*", "must match [a-z][a-z0-9_]*")]


def _country_as_written(value: object) -> object:
    if isinstance(value, bool):
        # YAML 1.1 reads an unquoted NO (Norway), and ON, Y, N, as booleans.
        raise ValueError('an unquoted country code YAML reads as true or false: quote it ("NO")')
    return value


CountryCode = Annotated[
    str,
    BeforeValidator(_country_as_written),
    _matching(r"[A-Z]{2}", "must be an ISO 3166 country code (e.g. CN)"),
]

# RFC 9110 `token`: the characters a header field name may hold.
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway on every forwarded request; a contract may not supply or pass them through.
GATEWAY_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-encoding",
        "x-data-retention-days",
        "x-data-onward-transfer",
    }
)
GATEWAY_HEADER_PREFIXES = ("x-share-",)
# The caller's credentials and the client's address: never passed to a partner.
CALLER_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "x-consent-token",
        "forwarded",
        "via",
        "x-real-ip",
        "x-client-ip",
        "client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "x-remote-addr",
        "x-remote-ip",
        "x-proxyuser-ip",
    }
)
# `x-original-forwarded-for` and the like carry the address under a proxy's own prefix.
CALLER_HEADER_PREFIXES = ("x-forwarded-", "x-original-forwarded-")


def _header_token(value: str) -> str:
    if not _HEADER_TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def _credential_header(value: str) -> str:
    if not _HEADER_TOKEN.fullmatch(value):
        # Not echoed: "X-Api-Key: <the key>" pasted whole is a secret.
        raise ValueError("is not a valid HTTP header name")
    name = value.lower()
    if (
        name in HOP_BY_HOP_HEADERS
        or name in GATEWAY_HEADERS
        or name.startswith(GATEWAY_HEADER_PREFIXES)
    ):
        raise ValueError(f"{value} is set by the gateway or the connection, not by upstream.auth")
    return value


def _pass_through_header(value: str) -> str:
    name = _header_token(value).lower()
    if name in HOP_BY_HOP_HEADERS:
        raise ValueError(f"{value} is a hop-by-hop header and is never forwarded")
    if name in GATEWAY_HEADERS or name.startswith(GATEWAY_HEADER_PREFIXES):
        raise ValueError(f"{value} is set by the gateway and cannot be passed through")
    if name in CALLER_HEADERS or name.startswith(CALLER_HEADER_PREFIXES):
        raise ValueError(
            f"{value} carries the caller's credentials or address and is never forwarded"
        )
    return value


CredentialHeader = Annotated[str, AfterValidator(_credential_header)]
PassThroughHeader = Annotated[str, AfterValidator(_pass_through_header)]

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def _media_type(value: str) -> str:
    if not _MEDIA_TYPE.fullmatch(value):
        raise ValueError(
            f"{value!r} must be a lower-case type/subtype media type, without parameters"
        )
    return value


MediaType = Annotated[str, AfterValidator(_media_type)]

_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _route_template(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError("must start with /")
    if "?" in path or "#" in path:
        raise ValueError("must not contain a query or fragment; name query parameters as fields")
    if path == "/":
        return path
    if path.endswith("/"):
        raise ValueError("must not end with /")
    for segment in path[1:].split("/"):
        if not segment:
            raise ValueError("must not contain an empty segment (//)")
        if segment in {".", ".."}:
            raise ValueError("must not contain . or .. segments")
        if segment.startswith("{") or segment.endswith("}"):
            if not _PLACEHOLDER.fullmatch(segment):
                raise ValueError(
                    f"placeholder {segment} must be a whole segment named [a-z_][a-z0-9_]*"
                )
        elif not _LITERAL_SEGMENT.fullmatch(segment):
            raise ValueError(
                f"segment {segment!r} may only hold letters, digits and - . _ ~ "
                "or be a {name} placeholder"
            )
    return path


RouteTemplate = Annotated[str, AfterValidator(_route_template)]


def _records_path(path: str) -> str:
    if not path.endswith("[]"):
        raise ValueError("must name the array of records and end with [] (e.g. items[])")
    return path


# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Partner(_Model):
    id: PartnerId
    name: NonBlank
    kind: Literal["cloud_storage", "technical_maintenance", "credit_assessment", "other"]
    relationship: Literal["entrusted", "third_party"]


class ContractInfo(_Model):
    id: NonBlank
    version: StrictInt = Field(ge=1, le=_INT64_MAX)  # recorded in every share's record
    effective: CalendarDate
    expires: CalendarDate
    status: Literal["active", "suspended", "terminated"]
    pia_ref: NonBlank | None = None


class NoAuth(_Model):
    type: Literal["none"]


class BearerAuth(_Model):
    type: Literal["bearer"]
    token_env: EnvName


class BasicAuth(_Model):
    type: Literal["basic"]
    # RFC 7617: the user-id ends at the first colon.
    username: Annotated[
        str,
        _matching(
            r"[^:\x00-\x1f\x7f]+",
            "must be non-empty, without ':' or control characters",
            echo=False,  # "user:password" is a password
        ),
    ]
    password_env: EnvName


class HeaderAuth(_Model):
    type: Literal["header"]
    name: CredentialHeader
    value_env: EnvName


UpstreamAuth = Annotated[NoAuth | BearerAuth | BasicAuth | HeaderAuth, Field(discriminator="type")]


class Upstream(_Model):
    base_url: str
    location: CountryCode
    timeout_s: float = Field(default=10, gt=0, le=MAX_UPSTREAM_TIMEOUT_S, strict=True)
    auth: UpstreamAuth = NoAuth(type="none")
    # false for a partner known to answer one request twice: on a reused connection, a late
    # second answer would be read as the next share's.
    reuse_connections: StrictBool = True


class CrossBorder(_Model):
    allowed: StrictBool = False
    mechanism: Literal["standard_contract", "certification", "security_assessment"] | None = None


class Sensitive(_Model):
    allowed: tuple[str, ...] = ()
    consent_required: StrictBool = True


class Terms(_Model):
    retention_days: StrictInt = Field(ge=0, le=_INT64_MAX)
    onward_transfer: StrictBool = False
    cross_border: CrossBorder = CrossBorder()
    sensitive: Sensitive = Sensitive()
    minors: Literal["deny", "allow"] = "deny"
    # At least one a day, at most a million a second, and never infinite: the limiter's waits
    # and Retry-After must be numbers.
    rate_limit_per_s: float | None = Field(
        default=None, ge=MIN_RATE_PER_S, le=1_000_000, strict=True, allow_inf_nan=False
    )
    max_records_per_day: StrictInt | None = Field(default=None, ge=1, le=_INT64_MAX)

    @field_validator("rate_limit_per_s", "max_records_per_day", mode="before")
    @classmethod
    def _cap_written(cls, value: object) -> object:
        if value is None:
            # `rate_limit_per_s:` with nothing after it (or only a comment) reads as null: taken
            # as "no cap", the partner would be sent without limit where a cap was meant.
            raise ValueError("empty: write the cap, or remove the key for none")
        return value


# Transforms. In the file: `hash`, `redact`, `{mask: {keep_first: N, keep_last: N}}`,
# `{generalize: year}`, `{generalize: {bucket: N}}`. Inside, each is a model tagged by `kind`,
# which is also the file's key, so an error under `mask:` is reported at `transform.mask.<key>`.


class HashSpec(_Model):
    kind: Literal["hash"] = "hash"

    @model_serializer
    def _as_written(self) -> str:
        return "hash"


class RedactSpec(_Model):
    kind: Literal["redact"] = "redact"

    @model_serializer
    def _as_written(self) -> str:
        return "redact"


class MaskSpec(_Model):
    """Keep the first and last characters, mask the rest; 0 and 0 masks everything."""

    kind: Literal["mask"] = "mask"
    keep_first: StrictInt = Field(default=0, ge=0)
    keep_last: StrictInt = Field(default=0, ge=0)

    @model_serializer
    def _as_written(self) -> dict[str, dict[str, int]]:
        return {"mask": {"keep_first": self.keep_first, "keep_last": self.keep_last}}


class GeneralizeSpec(_Model):
    """A date to its year (`bucket` unset), or a number to its bucket of `bucket` wide."""

    kind: Literal["generalize"] = "generalize"
    # At least 2: a bucket of 1 is the exact value, recorded as transformed. At most what a
    # float holds exactly.
    bucket: StrictInt | None = Field(default=None, ge=2, le=10**15)

    @model_serializer
    def _as_written(self) -> dict[str, str | dict[str, int]]:
        if self.bucket is None:
            return {"generalize": "year"}
        return {"generalize": {"bucket": self.bucket}}


TransformSpec = Annotated[
    HashSpec | RedactSpec | MaskSpec | GeneralizeSpec, Field(discriminator="kind")
]

_TRANSFORM_FORMS = "hash, redact, {mask: {keep_first: N, keep_last: N}} or {generalize: ...}"


def _transform_as_written(value: object) -> object:
    """Turn the file's forms into the `kind`-tagged mappings the union validates."""
    if value is None:
        # `transform:` with nothing after it (or only a comment) reads as null: taken as "no
        # transform", the value would go out raw where the author meant to write one.
        raise ValueError(f"empty: write a transform ({_TRANSFORM_FORMS}) or remove the key")
    if isinstance(value, BaseModel):
        return value
    if isinstance(value, str):
        if value in {"hash", "redact"}:
            return {"kind": value}
        raise ValueError(f"unknown transform {value!r}; expected {_TRANSFORM_FORMS}")
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"a transform is one of {_TRANSFORM_FORMS}")
    ((name, options),) = value.items()
    if name == "mask":
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ValueError("mask takes {keep_first: N, keep_last: N}")
        if "kind" in options:
            raise ValueError("mask: unknown key 'kind'")
        return {**options, "kind": "mask"}
    if name == "generalize":
        if options == "year":
            return {"kind": "generalize"}
        if (
            isinstance(options, dict)
            and options.get("bucket") is not None  # `{bucket: }` is not `year`
            and "kind" not in options
        ):
            return {**options, "kind": "generalize"}
        raise ValueError("generalize takes year or {bucket: N}")
    raise ValueError(f"unknown transform {name!r}; expected {_TRANSFORM_FORMS}")


class FieldRule(_Model):
    path: str
    category: str
    transform: Annotated[TransformSpec | None, BeforeValidator(_transform_as_written)] = None


class ResponseField(_Model):
    path: str


class ResponseSpec(_Model):
    fields: tuple[ResponseField, ...]


_EMPTY_ROUTE_KEYS = {
    "subject": "empty: name the field that identifies the data subject, or remove the key",
    "birth_date": "empty: name the field that holds the subject's birth date, or remove the key",
    "fields": "empty: list the fields the partner may receive, or remove the key (a route "
    "without fields forwards its body unchanged, with content_types)",
    "response": "empty: name the fields the caller may receive, or remove the key",
}


class Route(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: RouteTemplate
    purpose: str
    subject: str | None = None
    records: Annotated[str, AfterValidator(_records_path)] | None = None
    birth_date: str | None = None
    fields: tuple[FieldRule, ...] | None = None
    content_types: Annotated[tuple[MediaType, ...], AfterValidator(_non_empty)] | None = None
    headers: tuple[PassThroughHeader, ...] = ()
    response: ResponseSpec | None = None
    direction: Literal["push"] = "push"

    @field_validator(*_EMPTY_ROUTE_KEYS, mode="before")
    @classmethod
    def _written(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            # `birth_date:` with nothing after it (or only a comment) reads as null: taken as
            # no such key, `minors: deny` had no birth date to act on, a share no subject to
            # record for an access request, a route without `fields` forwards its body as it
            # came, and one without `response` the partner's whole answer.
            raise ValueError(_EMPTY_ROUTE_KEYS[str(info.field_name)])
        return value

    @field_validator("direction", mode="before")
    @classmethod
    def _push_only(cls, value: object) -> object:
        if value == "pull":
            raise ValueError("pull routes are not supported yet; only push")
        return value

    @field_validator("headers")
    @classmethod
    def _unique_headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for name in value:
            if name.lower() in seen:
                raise ValueError(f"{name} is listed twice")
            seen.add(name.lower())
        return value

    @field_validator("content_types")
    @classmethod
    def _unique_types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a content type is listed twice")
        return value


class Contract(_Model):
    partner: Partner
    contract: ContractInfo
    upstream: Upstream
    purposes: Annotated[tuple[Purpose, ...], AfterValidator(_non_empty)]
    categories: tuple[str, ...]
    terms: Terms
    routes: Annotated[tuple[Route, ...], AfterValidator(_non_empty)]


def to_transform(spec: HashSpec | RedactSpec | MaskSpec | GeneralizeSpec) -> Transform:
    """The field filter's transform for one contract transform."""
    from gateway.transforms import GeneralizeBucket, GeneralizeYear, Hash, Mask, Redact

    match spec:
        case HashSpec():
            return Hash()
        case RedactSpec():
            return Redact()
        case MaskSpec():
            return Mask(keep_first=spec.keep_first, keep_last=spec.keep_last)
        case GeneralizeSpec(bucket=None):
            return GeneralizeYear()
        case GeneralizeSpec(bucket=int(size)):
            return GeneralizeBucket(size=size)
    raise TypeError(f"not a transform: {spec!r}")
