"""Chinese postal addresses in free text: where each starts, and where it may end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

# The characters of names: CJK unified ideographs and extension A.
_NAME_CHARS: Final = frozenset(
    chr(cp) for first, last in ((0x3400, 0x4DBF), (0x4E00, 0x9FFF)) for cp in range(first, last + 1)
)
# Characters no place name holds that prose puts right before one ("请寄到", "地址", "住在",
# "我家", "发往", "的"), or that end an address before ("…88号", "…1001室"): a name read back
# stops there. Characters place names do hold (和平区, 成都, 于洪区, 向阳路, 从化区, 上海) are not
# among them, though prose uses them as often.
_STOPS: Final = frozenset("的了在是到寄送请址住往我你他她您把给被让说及或与就也要还已号室")
# Lead-ins of two characters, none of whose characters is a stop by itself.
_LEAD_INS: Final = ("位于", "来自", "地处")
# The provincial-level divisions, as they are named before 省, 市 or 自治区: where an address's
# first part is one, it starts at the name ("快递员说北京市…" starts at 北京).
_PROVINCES: Final = (
    *("北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏"),
    *("浙江", "安徽", "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南"),
    *("四川", "贵州", "云南", "陕西", "甘肃", "青海", "台湾", "内蒙古", "广西壮族", "广西"),
    *("西藏", "宁夏回族", "宁夏", "新疆维吾尔", "新疆"),
)
# What administrative parts end in: province (省, 自治区), city (市, 州, 盟, 地区), district or
# county (区, 县, 旗), town (镇, 乡, 街道). Two-character ones (自治区, 地区, 街道) end in one of
# these too.
_ADMIN_ENDS: Final = frozenset("省市区县旗州盟镇乡")
_PROVINCE_ENDS: Final = frozenset("省市区")
_STREET_NAME_CAP: Final = 12  # 2 to 12 characters before 路, 街, 大街, 大道, 巷, 弄, 胡同
_ADMIN_NAME_CAP: Final = 6  # 新疆维吾尔(自治区), 巴音郭楞蒙古(自治州)
_ESTATE_NAME_CAP: Final = 10
_ADMIN_PARTS_CAP: Final = 5  # province, city, district, town, and a county-level city
# Between a street number and the building parts: a building's or estate's name
# ("88号SOHO现代城5号楼", "100号环球金融中心58层"), which ends as one does. Any word would take in
# prose ("人民路3号出口5楼", "一路3号选手排名第5楼").
_BETWEEN_CAP: Final = 12
_BUILDING_NAME_ENDS: Final = (
    *("城", "中心", "大厦", "大楼", "广场", "公寓", "花园", "家园", "小区", "新村", "苑", "园"),
    *("院", "府", "邸", "公馆", "阁", "庭", "湾", "座"),
)

# A street and its number: "建国路88号", "深南大道10000号", "建国门外大街甲6号", "88-1号". Bare 道
# (知道, 频道, 通道) and 里 (这里, 家里) end more words of prose than street names, and are not
# read. The number is digits: the scanner reads Chinese numerals only as a run of seven or more.
_STREET: Final = re.compile(
    "(?:大街|大道|胡同|路|街|巷|弄)[甲乙丙丁]?(?P<number>[0-9]{1,5}(?:-[0-9]{1,4})?)号(?:院|楼)?(?!线)"
)
# An estate's name ends in one of these: "阳光小区", "碧桂园", "望京新村", "国贸公寓".
_ESTATE: Final = re.compile("(?:小区|花园|家园|新村|公寓|大厦|苑|园|村)")
_NUMERAL: Final = "(?:[0-9]{1,4}|[A-Za-z][0-9]{0,3}|[一二三四五六七八九十]{1,3})"
# The building parts after a street number or an estate's name: building, unit, floor, block
# ("5号楼", "3栋", "2幢", "1单元", "5层", "5楼", "B座"), a room ("1001室", "1001房", "1001号"),
# or a number after a dash ("-1001"); a number right after a building part is its room
# ("5号楼1001"). A space may set each apart. None runs on into more digits: a phone number after
# one is its own.
_PART: Final = re.compile(
    " ?(?:"
    f"(?P<building>{_NUMERAL}(?:号楼|号院|栋|幢|座|单元|层|楼))"
    "|(?P<room>[A-Za-z]?[0-9]{1,5}(?:室|房|号(?![楼院])))"
    "|(?P<dashed>-[0-9]{1,5}(?![0-9]))"
    ")"
)
_BARE_ROOM: Final = re.compile("-?[0-9]{3,5}(?![0-9A-Za-z])")
_PARTS_CAP: Final = 6
# How far before a number's 号 or 室 a street's or estate's last characters may stand: a street
# number's 甲, digits and dash (`_STREET`), and an estate's building parts (`_PART`, eight
# characters at most each, a space among them) up to its room.
_STREET_REACH: Final = 14
_ESTATE_REACH: Final = 2 + _PARTS_CAP * 8


@dataclass(frozen=True, slots=True)
class Address:
    """An address in the text: it starts at ``start`` (its first administrative part, if any),
    its street's or estate's name at ``name``, and it ends at ``end``. Cut short before
    ``least`` it is no address; nor, without its administrative parts, before ``least_alone``
    (None: then it is none at all): a street with a number alone is one only with a building
    part after it."""

    start: int
    name: int
    end: int
    least: int
    least_alone: int | None


# Each address has a number right before a 号 or a 室 ("88号", "5号楼", "1001室"). A search for
# each, opening with it, after a test of one character: office prose ("会议室", "订单号") pays
# a fiftieth of its scan, where one search for both cost twice that.
_NUMBER_HAO: Final = re.compile("号(?<=[0-9]号)")
_NUMBER_SHI: Final = re.compile("室(?<=[0-9]室)")


def may_hold_postal(text: str) -> bool:
    """Whether ``text`` (folded: digits ASCII) may hold an address at all."""
    return ("号" in text and _NUMBER_HAO.search(text) is not None) or (
        "室" in text and _NUMBER_SHI.search(text) is not None
    )


def find_postal(text: str) -> list[Address]:
    """The addresses in ``text`` (folded: digits ASCII), in order, none overlapping."""
    # Streets and estates are looked for only near a number before 号 or 室: a long document
    # holding one such number is not searched whole for every 路 and 园 in it.
    numbered = sorted(
        m.start() for pattern in (_NUMBER_HAO, _NUMBER_SHI) for m in pattern.finditer(text)
    )
    candidates = _street_addresses(text, numbered) + _estate_addresses(text, numbered)
    found: list[Address] = []
    for address in sorted(candidates, key=_by_start):
        if found and address.start < found[-1].end:
            # One address read from two places (an estate's name after a street number): the
            # first holds the start, the two together the end.
            before = found[-1]
            if address.end > before.end:
                found[-1] = Address(
                    before.start, before.name, address.end, before.least, before.least_alone
                )
            continue
        found.append(address)
    return found


def _by_start(address: Address) -> int:
    return address.start


def _streets(text: str, numbered: list[int]) -> Iterator[re.Match[str]]:
    """The streets with a number whose 号 is one of ``numbered``."""
    for at in numbered:
        if text[at] != "号":
            continue
        # From a street's last two characters through its 甲 and number (ten characters at
        # most) to the character after a 号楼 or 号院, which says whether it is a 号线.
        start, stop = max(0, at - _STREET_REACH), min(len(text), at + 3)
        for m in _STREET.finditer(text, start, stop):
            if m.end("number") == at:
                yield m


def _estates(text: str, numbered: list[int]) -> Iterator[re.Match[str]]:
    """The estates' names' ends before each of ``numbered``, near enough for the building parts
    between them, each once. The stretches searched end at a 号 or 室, which no end of an
    estate's name holds: none is cut in two."""
    read = 0
    for at in numbered:
        start = max(read, at - _ESTATE_REACH)
        if start < at:
            yield from _ESTATE.finditer(text, start, at)
        read = at


def _street_addresses(text: str, numbered: list[int]) -> list[Address]:
    found: list[Address] = []
    for m in _streets(text, numbered):
        name = _name_start(text, m.start(), _STREET_NAME_CAP)
        if m.start() - name < 2:
            continue
        start = _admin_start(text, name)
        parts = _parts_after(text, m.end())
        first = parts[0] if parts else None
        if start < name:
            # Its administrative parts and its number's digits make it an address: an
            # identifier may take the 号 after them.
            found.append(
                Address(start, name, parts[-1] if parts else m.end(), m.end("number"), first)
            )
        elif first is not None:
            found.append(Address(start, name, parts[-1], first, first))
        # Else a landmark or a street corner: a number alone makes no home.
    return found


def _estate_addresses(text: str, numbered: list[int]) -> list[Address]:
    found: list[Address] = []
    for m in _estates(text, numbered):
        name = _name_start(text, m.start(), _ESTATE_NAME_CAP)
        if m.start() == name:
            continue
        parts, rooms = _parts(text, m.end())
        # A building part and a room: an estate's name and a building alone are a landmark.
        if len(parts) < 2 or not rooms:
            continue
        found.append(Address(_admin_start(text, name), name, parts[-1], rooms[0], rooms[0]))
    return found


def _parts_after(text: str, at: int) -> list[int]:
    """The ends of the building parts after a street number at ``at``, a building's name
    between them or not."""
    parts, _ = _parts(text, at)
    if parts:
        return parts
    stop = min(len(text), at + _BETWEEN_CAP)
    i = at
    while i < stop and (text[i] in _NAME_CHARS or (text[i].isascii() and text[i].isalpha())):
        if text[i] in _STOPS:
            break
        i += 1
        if text.endswith(_BUILDING_NAME_ENDS, at, i):
            parts, _ = _parts(text, i)
            if parts:
                return parts
    return []


def _parts(text: str, at: int) -> tuple[list[int], list[int]]:
    """The ends of the building parts from ``at`` on, and of those that are rooms."""
    ends: list[int] = []
    rooms: list[int] = []
    building = False
    while len(ends) < _PARTS_CAP:
        m = _PART.match(text, at)
        if m is None:
            if building and (bare := _BARE_ROOM.match(text, at)) is not None:
                at = bare.end()
                ends.append(at)
                rooms.append(at)
            break
        at = m.end()
        ends.append(at)
        building = m.group("building") is not None
        if not building:
            rooms.append(at)
    return ends, rooms


def _name_start(text: str, end: int, cap: int) -> int:
    """Where the name ending at ``end`` starts: back over the characters of names, to a stop,
    a lead-in, the end of an administrative part (where the name has two characters or more),
    or ``cap`` characters."""
    i = end
    floor = max(0, end - cap)
    while i > floor:
        c = text[i - 1]
        if c not in _NAME_CHARS or c in _STOPS or text.endswith(_LEAD_INS, 0, i):
            break
        if end - i >= 2 and (c in _ADMIN_ENDS or text.endswith("街道", 0, i)):
            break
        i -= 1
    return i


def _admin_start(text: str, name: int) -> int:
    """Where the administrative parts right before a name starting at ``name`` start (``name``
    if there are none)."""
    start = name
    for _ in range(_ADMIN_PARTS_CAP):
        if start == 0:
            break
        if text.endswith("街道", 0, start):
            suffix = start - 2
        elif text[start - 1] in _ADMIN_ENDS:
            suffix = start - 1
            if text.endswith(("自治", "地"), 0, suffix):
                suffix -= 1 if text[suffix - 1] == "地" else 2
        else:
            break
        head = _name_start(text, suffix, _ADMIN_NAME_CAP)
        if suffix - head < 1:
            break
        if text[start - 1] in _PROVINCE_ENDS:
            for province in _PROVINCES:
                if text.endswith(province, head, suffix):
                    head = suffix - len(province)
                    break
        start = head
    return start
