"""Strict YAML files, as contracts and the settings file are read: bounded, unambiguous, safe."""

from __future__ import annotations

import os
import re
import stat
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# Control and format characters, line and paragraph separators, and lone surrogates: what
# would split one problem's line, rewrite the terminal showing it, or fail to print at all.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """`text` with each unprintable character escaped as Python writes it (`\\n`, `\\x1b`,
    `\\ud800`): a key or value of a file reaches a problem line as the file has it."""
    if text.isprintable():
        return text
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _UNPRINTABLE else c for c in text)


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
    return read_bounded_file(path, MAX_FILE_BYTES, _TOO_BIG)


def read_bounded_file(path: Path, limit: int, too_big: str) -> bytes:
    """The bytes of the regular file at `path`, read as contracts are: never a FIFO, a device
    or a directory, never more than `limit` bytes (`too_big` says why), and never a file
    caught half-written. YamlFileError otherwise, its one problem at the path ""."""
    for attempt in range(READ_ATTEMPTS):
        if attempt:
            time.sleep(READ_RETRY_PAUSE_S)
        raw, settled = _read_once(path, limit, too_big)
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


def _read_once(path: Path, limit: int, too_big_message: str) -> tuple[bytes, bool]:
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
            too_big = before.st_size > limit
            raw = b"" if too_big else _read_fd(fd, limit + 1)
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
    if too_big or len(raw) > limit:
        raise YamlFileError([("", too_big_message)])
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
