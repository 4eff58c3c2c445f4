"""Throughput of the free-text personal-data scanner against plain str/re passes, in MB/s.

Run ``python bench/bench_pii.py``. Texts are measured in UTF-8 bytes. Each workload is scanned
both as field-sized strings (what the gateway sees in JSON bodies) and as one document.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

from gateway import pii

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "pii_corpus.jsonl"
TARGET_BYTES = 2_000_000
ROUNDS = 5

PROSE = (
    "今天下午的周会讨论了第三季度的产品路线图，大家对优先级基本达成一致。",
    "请各位在本周五之前把评审意见写到共享文档里，逾期视为没有意见。",
    "关于新版本的发布计划，我们需要再确认一下测试进度和回滚方案。",
    "会议室预订系统升级后，可以直接在日历里选择投影和视频设备。",
    "The quarterly review is scheduled for next Tuesday; please bring your slides.",
    "Please check the attached spreadsheet and reply by Friday if anything is missing.",
    "文件《项目计划》已上传到共享空间，请注意只读权限，不要直接修改原稿。",
    "客服反馈：用户无法上传超过一百兆的附件，已转给存储团队排查。",
    "大家好，明天上午九点半全员大会，地点在三楼大会议室，请准时参加。",
    "设计稿第二版已经更新，主要调整了导航栏和消息列表的间距。",
)
# The numbers ordinary office prose carries: dates, times, amounts, counts, rooms.
SHORT_NUMBERS = (
    "请在2025-01-01 12:00:00之前提交报销单，金额¥12,800.00，审批人：财务部。",
    "会议室A-301已预订，参会人员共12人，时长90分钟。",
    "腾讯会议号：876 543 210，时间：14:30-15:30，请提前5分钟入会。",
    "本季度完成率85.5%，比上季度提高了3个百分点，预算剩余¥3,500.00。",
    "The review moved to 2025/03/15 at 10:30; 8 people confirmed.",
)
# Identifier-like numbers that are not personal data: the scanner's hardest non-PII input.
ID_LIKE = (
    "订单号202501011234567890已发货，快递单号SF1234567890123，预计3天送达。",
    "客户端版本1.2.3.4.5修复了共享屏幕卡顿的问题。",
    "发票代码044031900111，发票号码12345678，合计¥3,500.00元（含税）。",
)

# The slowest shapes a search of random concatenations of identifier pieces found (µs per
# character, all linear): IPv6 addresses glued with a letter between them, an address whose
# top-level domain took an IPv6 address's first hex letters, an identifier whose tail a local
# part took, a spelled-out '@' beside glued identifiers (the text is scanned twice), and
# addresses glued to IPv6 addresses with numbers that change (once quadratic). As one document
# they hold a spelled-out '@' (one field's "&#64" ends where the next begins), so the whole of
# it is scanned a second time, as the gateway scans such a string.
ADVERSARIAL_UNITS = (
    "::1g",
    "li@corp.cnbA:5183::C",
    "fe80::63kedjn@qq.net",
    "li&#64;qq.comfe80::1Then fM12345678",
    "fe80::1",
)
ADVERSARIAL_BYTES = 250_000  # a tenth of the others: these scan at well under 1 MB/s


def _adversarial(rng: random.Random) -> list[str]:
    """Fields of one shape each, repeated to 1 to 4 KB."""
    fields: list[str] = []
    size = 0
    while size < ADVERSARIAL_BYTES:
        repeats = rng.randint(1_000, 4_000)
        unit = rng.choice(ADVERSARIAL_UNITS)
        field = (
            (unit * (repeats // len(unit) + 1))[:repeats]
            if rng.random() < 0.8
            else "".join(f"u{i}fe80::{i % 9}k@q{i}.cn" for i in range(repeats // 20))
        )
        fields.append(field)
        size += len(field.encode())
    return fields


def _load_corpus() -> tuple[list[str], list[str]]:
    positives: list[str] = []
    negatives: list[str] = []
    with CORPUS.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            (positives if record["expect"] else negatives).append(record["text"])
    return positives, negatives


Pool = tuple[str, ...] | list[str]


def _fill(pools: list[tuple[Pool, int]], rng: random.Random) -> list[str]:
    """Field-sized strings of one to four sentences; each sentence comes from a pool picked
    with the given percentage weight."""
    sources = [pool for pool, _ in pools]
    weights = [weight for _, weight in pools]

    def sentence() -> str:
        return rng.choice(rng.choices(sources, weights)[0])

    fields: list[str] = []
    size = 0
    while size < TARGET_BYTES:
        field = "".join(sentence() for _ in range(rng.randint(1, 4)))
        fields.append(field)
        size += len(field.encode())
    return fields


def _rate(fields: list[str], run: Callable[[str], object]) -> float:
    size = sum(len(f.encode()) for f in fields)
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for field in fields:
            run(field)
        best = min(best, time.perf_counter() - started)
    return size / best / 1e6


def main() -> None:
    rng = random.Random(7)
    positives, negatives = _load_corpus()
    workloads = {
        # Mostly prose; one sentence in five with short numbers, one in ten identifier-like.
        "no PII (office prose)": _fill(
            [(PROSE, 70), (SHORT_NUMBERS, 20), (ID_LIKE, 5), (negatives, 5)], rng
        ),
        "no PII (identifier-like only)": _fill([(ID_LIKE, 50), (negatives, 50)], rng),
        "dense PII (corpus positives)": _fill([(positives, 100)], rng),
        "adversarial (glued shapes)": _adversarial(rng),
    }
    allowed: frozenset[str] = frozenset()
    fold = str.maketrans({chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)})
    needle = re.compile(r"[0-9]{25}@")
    passes: dict[str, Callable[[str], object]] = {
        "pii.scan": lambda s: pii.scan(s, allowed),
        "baseline str.translate": lambda s: s.translate(fold),
        "baseline re.search": needle.search,
    }
    print(f"{'workload':<30} {'shape':<10} " + " ".join(f"{name:>24}" for name in passes))
    for name, fields in workloads.items():
        for shape, data in (("fields", fields), ("document", ["".join(fields)])):
            rates = [_rate(data, run) for run in passes.values()]
            cells = " ".join(f"{r:>18.1f} MB/s" for r in rates)
            print(f"{name:<30} {shape:<10} {cells}")


if __name__ == "__main__":
    main()
