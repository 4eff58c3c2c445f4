"""Builds pii_corpus.jsonl: labelled sentences for the free-text personal-data scanner.

Run ``python tests/data/pii_corpus_gen.py`` to rewrite the corpus. Identifiers are generated with
their check characters computed here, independently of the scanner, from a fixed seed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

SEED = 20250101
OUT = Path(__file__).with_name("pii_corpus.jsonl")

Expect = dict[str, str]
Line = dict[str, object]

# --- check characters (GB 11643, GB 32100, GB 11714, Luhn, Hong Kong and Taiwanese IDs) --------

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
ALNUM36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def id_check(body17: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, ID_WEIGHTS, strict=True)) % 11]


def uscc_check(body17: str) -> str:
    total = sum(USCC_CHARSET.index(c) * w for c, w in zip(body17, USCC_WEIGHTS, strict=True))
    return USCC_CHARSET[(31 - total % 31) % 31]


def org_check(body8: str) -> str:
    c9 = 11 - sum(ALNUM36.index(c) * w for c, w in zip(body8, ORG_WEIGHTS, strict=True)) % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def luhn_check(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def hk_check(prefix: str, digits6: str) -> str:
    """A Hong Kong identity card's check: the prefix padded to two with a space (36), letters
    A=10 ... Z=35, weights 9 to 2; 11 - (sum mod 11), 11 as 0 and 10 as A."""
    values = [36 if c == " " else ord(c) - ord("A") + 10 for c in prefix.rjust(2)]
    values += [int(c) for c in digits6]
    total = sum(v * w for v, w in zip(values, range(9, 1, -1), strict=True))
    return "0123456789A"[(11 - total % 11) % 11]


TW_LETTERS = "ABCDEFGHJKLMNPQRSTUVXYWZIO"  # A=10, B=11, ... I=34, O=35


def tw_ok(value: str) -> bool:
    """Whether ``value`` (a letter and nine digits) holds a Taiwanese ID number's check."""
    tens, units = divmod(TW_LETTERS.index(value[0]) + 10, 10)
    weights = (8, 7, 6, 5, 4, 3, 2, 1, 1)
    return (
        tens + 9 * units + sum(int(c) * w for c, w in zip(value[1:], weights, strict=True))
    ) % 10 == 0


# --- surface forms -----------------------------------------------------------------------------


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def group(s: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for n in sizes:
        parts.append(s[i : i + n])
        i += n
    if i < len(s):
        parts.append(s[i:])
    return sep.join(parts)


# --- valid identifiers -------------------------------------------------------------------------


def words(s: str) -> tuple[str, ...]:
    return tuple(s.split())


REGIONS = words(
    "110101 110105 110108 310104 310115 440305 440106 330106 320102 320583 510107 420106 "
    "610113 500103 370202 210102 350203 430104 120101 230103 530102 410105 130102"
)
MOBILE_PREFIXES = words(
    "130 131 132 133 134 135 136 137 138 139 145 147 150 151 152 153 155 156 157 158 159 "
    "166 170 173 175 176 177 178 180 181 182 183 184 185 186 187 188 189 191 195 198 199"
)
CARD_BINS = ("622202", "621700", "622848", "623058", "436742", "621483", "622588", "625965")
CARD_BINS_19 = ("622202", "955880", "622848", "621226", "623668")
EMAIL_LOCALS = words(
    "zhangsan li.si wang_wu88 chen-jie hr+recruit Zhao.Lei liuyang2024 sun.xiaomei "
    "13912345678 it-support zhou_min xu.hao"
)
EMAIL_DOMAINS = words(
    "example.com 163.com qq.com corp.example.cn mail.example.com.cn outlook.com sina.com "
    "126.com example.org"
)


def rand_digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def rand_birth(rng: random.Random, lo: int = 1950, hi: int = 2015) -> dt.date:
    start = dt.date(lo, 1, 1).toordinal()
    return dt.date.fromordinal(rng.randint(start, dt.date(hi, 12, 31).toordinal()))


def valid_id(rng: random.Random, want_x: bool = False) -> str:
    while True:
        body = rng.choice(REGIONS) + rand_birth(rng).strftime("%Y%m%d") + rand_digits(rng, 3)
        check = id_check(body)
        if want_x == (check == "X"):
            return body + check


def valid_phone(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + rand_digits(rng, 8)


def valid_card(rng: random.Random, length: int) -> str:
    bins = CARD_BINS_19 if length == 19 else CARD_BINS
    body = rng.choice(bins) + rand_digits(rng, length - 7)
    return body + luhn_check(body)


def valid_uscc(rng: random.Random) -> str:
    head = rng.choice(("91", "91", "91", "92", "93", "12", "52", "51", "11"))
    region = "100000" if head == "11" else rng.choice(REGIONS)
    org_body = "".join(rng.choice(USCC_CHARSET[:10] + "ABCDEFGHJKLMN") for _ in range(8))
    body = head + region + org_body + org_check(org_body)
    return body + uscc_check(body)


def valid_passport(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "E" + rand_digits(rng, 8)
    if kind == 1:
        return "G" + rand_digits(rng, 8)
    return "E" + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + rand_digits(rng, 7)


def valid_hk_id(rng: random.Random) -> str:
    """A Hong Kong identity card as it is written: "A123456(3)", "A123456 (3)", "AB9876543"."""
    prefix = "".join(rng.choice("ABCDEFGHJKLMNPRSTVWYZ") for _ in range(rng.choice((1, 1, 2))))
    digits = rand_digits(rng, 6)
    check = hk_check(prefix, digits)
    return prefix + digits + rng.choice((f"({check})", f" ({check})", check))


def valid_tw_id(rng: random.Random) -> str:
    """A Taiwanese ID number: a citizen's (1, 2) or a resident certificate's of 2021 on (8, 9)."""
    body = rng.choice(TW_LETTERS) + rng.choice("1289") + rand_digits(rng, 7)
    return body + next(d for d in "0123456789" if tw_ok(body + d))


def valid_ipv4(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind == 1:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind == 2:
        return f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return ".".join(str(rng.randint(1, 223)) for _ in range(4))


def valid_ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    kind = rng.randrange(4)
    if kind == 0:
        return ":".join(groups)
    if kind == 1:
        return "2001:db8::" + ":".join(groups[:2])
    if kind == 2:
        return "fe80::" + ":".join(groups[:4])
    return "240e:" + ":".join(groups[1:4]) + "::" + groups[7]


# --- templates ---------------------------------------------------------------------------------

T_PHONE = (
    "我的手机号是{v}请联系",
    "客户来电，回拨号码：{v}，请技术支持今天处理。",
    "【工单#4521】用户反馈无法登录，联系电话{v}。",
    "会议纪要：市场部王经理（{v}）负责对接供应商。",
    "如有问题请致电{v}，工作日9点到18点。",
    "Please call me at {v} if the meeting room is unavailable.",
    "紧急联系人：李女士 {v}",
    "@所有人 新同事入职，手机{v}，请大家拉他进群。",
    "文件说明：附件为外包团队通讯录，其中负责人电话为{v}。",
    "He said his number is {v}, but the ticket was closed.",
    "快递员电话{v}已到前台，请下楼取件",
    "预订会议室时留的手机号是“{v}”。",
)
T_ID = (
    "身份证号{v}，请核对后提交。",
    "员工档案：张伟，身份证号码：{v}，入职日期2023年5月8日。",
    "实名认证失败，用户提交的证件号为{v}请人工复核",
    "报销需附身份证复印件（{v}）及银行卡信息。",
    "Visitor registration: ID card {v}, host Ms. Chen.",
    "访客登记：证件号码{v}，访问事由：面试",
    "请把{v}这个身份证号从共享文件里删掉！",
    "合同附件第3页写着乙方身份证{v}。",
    "工单备注：用户身份证尾号不对，完整号码是{v}",
)
T_CARD = (
    "工资卡号{v}，开户行招商银行深圳分行。",
    "请将报销款打到我的银行卡：{v}",
    "财务：供应商收款账号{v}，户名上海某某科技有限公司。",
    "Refund to card {v} has been processed.",
    "聊天记录：你转到{v}就行，我已经绑定了",
    "附件《付款申请》中银行卡号为{v}，请审核。",
    "【报销】卡号：{v}（建设银行）",
    "用户在客服对话中发送了卡号{v}要求退款",
)
T_EMAIL = (
    "请把会议纪要发到{v}，谢谢。",
    "邮箱{v}请尽快回复",
    "Contact: {v} for access requests.",
    "新员工邮箱：{v}（已开通）",
    "抄送{v}和项目组全体成员。",
    "客服工单：用户邮箱{v}，无法接收验证码。",
    "Please forward the invoice to {v}.",
    "简历投递至{v}，邮件标题注明岗位。",
)
T_CREDIT = (
    "公司统一社会信用代码：{v}，注册地址北京市海淀区。",
    "开票信息：纳税人识别号{v}",
    "供应商资质审核：信用代码{v}已核验",
    "The vendor's unified social credit code is {v}.",
    "请在合同首页填写乙方统一社会信用代码（{v}）。",
    "营业执照扫描件，代码{v}，有效期长期",
)
T_PASSPORT = (
    "护照号码{v}，签证已办理。",
    "出差人员护照：{v}，请订机票时使用。",
    "Passport No. {v}, expires 2030.",
    "访客使用护照{v}登记入园",
    "请核对护照号（{v}）是否与机票一致。",
    "行程单上的证件号{v}需要更新",
)
T_IP = (
    "登录异常：来源IP {v}，时间凌晨3点。",
    "IP是{v}。",
    "服务器地址{v}无法访问，请运维排查",
    "Access from {v} was blocked by the firewall.",
    "安全告警：检测到{v}多次尝试登录失败",
    "会议客户端上报的IP地址：{v}",
    "用户反馈在{v}这台机器上无法共享屏幕",
)


def fmt_phone(rng: random.Random, p: str) -> str:
    forms: tuple[Callable[[str], str], ...] = (
        lambda s: s,
        lambda s: s,
        lambda s: group(s, (3, 4, 4), " "),
        lambda s: group(s, (3, 4, 4), "-"),
        lambda s: "+86 " + s,
        lambda s: "+86" + s,
        lambda s: "+86 " + group(s, (3, 4, 4), " "),
        lambda s: "+86-" + group(s, (3, 4, 4), "-"),
        lambda s: "0086" + s,
        lambda s: "86-" + s,
        lambda s: "(+86)" + s,
        fullwidth,
        lambda s: fullwidth("+86 ") + fullwidth(s),
    )
    return rng.choice(forms)(p)


def fmt_id(rng: random.Random, v: str) -> str:
    form = rng.randrange(6)
    if form == 4:
        return fullwidth(v)
    if form == 5 and v.endswith("X"):
        return v[:-1] + "x"
    return v


def fmt_card(rng: random.Random, v: str) -> str:
    form = rng.randrange(5)
    if form == 1:
        return group(v, (4, 4, 4, 4), " ")
    if form == 2:
        return group(v, (4, 4, 4, 4), "-")
    if form == 3:
        return fullwidth(v)
    return v


def fmt_email(rng: random.Random, v: str) -> str:
    form = rng.randrange(5)
    if form == 3:
        return v.replace("@", "＠")
    if form == 4:
        return fullwidth(v)
    return v


def fmt_plain_or_fullwidth(rng: random.Random, v: str) -> str:
    return fullwidth(v) if rng.randrange(5) == 0 else v


def _positive_makers() -> dict[str, Callable[[random.Random], str]]:
    def id_number(rng: random.Random) -> str:
        return fmt_id(rng, valid_id(rng, want_x=rng.randrange(4) == 0))

    def phone(rng: random.Random) -> str:
        return fmt_phone(rng, valid_phone(rng))

    def card(rng: random.Random) -> str:
        return fmt_card(rng, valid_card(rng, rng.choice((16, 16, 19))))

    def email(rng: random.Random) -> str:
        return fmt_email(rng, f"{rng.choice(EMAIL_LOCALS)}@{rng.choice(EMAIL_DOMAINS)}")

    def credit(rng: random.Random) -> str:
        return fmt_plain_or_fullwidth(rng, valid_uscc(rng))

    def passport(rng: random.Random) -> str:
        return fmt_plain_or_fullwidth(rng, valid_passport(rng))

    def ip(rng: random.Random) -> str:
        v = valid_ipv4(rng) if rng.randrange(3) else valid_ipv6(rng)
        return fmt_plain_or_fullwidth(rng, v)

    return {
        "identity.id_number": id_number,
        "contact.phone": phone,
        "financial.bank_account": card,
        "contact.email": email,
        "identity.credit_code": credit,
        "identity.passport": passport,
        "device.ip": ip,
    }


TEMPLATES = {
    "identity.id_number": T_ID,
    "contact.phone": T_PHONE,
    "financial.bank_account": T_CARD,
    "contact.email": T_EMAIL,
    "identity.credit_code": T_CREDIT,
    "identity.passport": T_PASSPORT,
    "device.ip": T_IP,
}

SHORT = {
    "contact.phone": "phone",
    "contact.email": "email",
    "identity.id_number": "id",
    "financial.bank_account": "card",
    "identity.passport": "passport",
    "device.ip": "ip",
    "identity.credit_code": "credit",
}

MULTI = (
    (
        "新员工信息：手机{phone}，邮箱{email}，身份证{id}。",
        ("contact.phone", "contact.email", "identity.id_number"),
    ),
    (
        "报销单：收款卡号{card}，联系电话{phone}",
        ("financial.bank_account", "contact.phone"),
    ),
    (
        "出差申请：护照{passport}，手机{phone}，审批人邮箱{email}",
        ("identity.passport", "contact.phone", "contact.email"),
    ),
    (
        "工单#88231：用户{email}从{ip}登录后被锁定，回电{phone}",
        ("contact.email", "device.ip", "contact.phone"),
    ),
    (
        "供应商{credit}的对公账户{card}已登记",
        ("identity.credit_code", "financial.bank_account"),
    ),
    (
        "Candidate profile: phone {phone}; email {email}; ID {id}",
        ("contact.phone", "contact.email", "identity.id_number"),
    ),
)

# Hand-written positives for shapes the generator does not produce.
FIXED_POSITIVES: tuple[tuple[str, list[Expect]], ...] = (
    # Foreign permanent residents' ID numbers (2023 edition: 9, province, nationality, date).
    (
        "外籍员工永居证号码943760201506016674，已备案",
        [{"category": "identity.id_number", "value": "943760201506016674"}],
    ),
    (
        "Permanent residence ID 944276 20100105 002X on file.",
        [{"category": "identity.id_number", "value": "944276 20100105 002X"}],
    ),
    (
        "证件号：９１１８４０１９７５０３２２１１８２，手机13800138000",
        [
            {"category": "identity.id_number", "value": "９１１８４０１９７５０３２２１１８２"},
            {"category": "contact.phone", "value": "13800138000"},
        ],
    ),
    (
        "联系我：13800138000或13900139000",
        [
            {"category": "contact.phone", "value": "13800138000"},
            {"category": "contact.phone", "value": "13900139000"},
        ],
    ),
    (
        "QQ邮箱13800138000@qq.com是我的常用邮箱",
        [
            {"category": "contact.email", "value": "13800138000@qq.com"},
        ],
    ),
    (
        "服务地址192.168.1.10:8080，请勿外传",
        [
            {"category": "device.ip", "value": "192.168.1.10"},
        ],
    ),
    (
        "IPv6 [2001:db8::8a2e:370:7334]:443 unreachable",
        [
            {"category": "device.ip", "value": "2001:db8::8a2e:370:7334"},
        ],
    ),
    (
        "映射地址::ffff:192.168.0.1出现异常流量",
        [
            {"category": "device.ip", "value": "::ffff:192.168.0.1"},
        ],
    ),
    (
        "fe80::1ff:fe23:4567:890a%eth0 是网卡的本地链路地址",
        [
            {"category": "device.ip", "value": "fe80::1ff:fe23:4567:890a"},
        ],
    ),
    (
        "Visa测试卡4111 1111 1111 1111不要出现在生产日志里",
        [
            {"category": "financial.bank_account", "value": "4111 1111 1111 1111"},
        ],
    ),
    (
        "邮件地址是wang.fang@example.com.",
        [
            {"category": "contact.email", "value": "wang.fang@example.com"},
        ],
    ),
    (
        "手机：+86 138 0013 8000；备用：0086-13912345678",
        [
            {"category": "contact.phone", "value": "+86 138 0013 8000"},
            {"category": "contact.phone", "value": "0086-13912345678"},
        ],
    ),
    (
        "身份证11010519491231002X，手机18612345678",
        [
            {"category": "identity.id_number", "value": "11010519491231002X"},
            {"category": "contact.phone", "value": "18612345678"},
        ],
    ),
    (
        "Server 8.8.8.8 and 114.114.114.114 are public resolvers",
        [
            {"category": "device.ip", "value": "8.8.8.8"},
            {"category": "device.ip", "value": "114.114.114.114"},
        ],
    ),
    (
        "护照E12345678和EA1234567都已过期",
        [
            {"category": "identity.passport", "value": "E12345678"},
            {"category": "identity.passport", "value": "EA1234567"},
        ],
    ),
)


# --- negatives ---------------------------------------------------------------------------------


def bad_check_id(rng: random.Random) -> str:
    v = valid_id(rng)
    wrong = rng.choice([c for c in "0123456789X" if c != v[-1]])
    return v[:-1] + wrong


def impossible_date_id(rng: random.Random) -> str:
    date = rng.choice(("19900230", "20010229", "19851332", "19790431", "20991201", "18991231"))
    body = rng.choice(REGIONS) + date + rand_digits(rng, 3)
    return body + id_check(body)


def bad_luhn_card(rng: random.Random) -> str:
    v = valid_card(rng, rng.choice((16, 19)))
    wrong = str((int(v[-1]) + rng.randint(1, 9)) % 10)
    return v[:-1] + wrong


def bad_uscc(rng: random.Random) -> str:
    v = valid_uscc(rng)
    return v[:-1] + rng.choice([c for c in USCC_CHARSET if c != v[-1]])


def order_number(rng: random.Random) -> str:
    day = rand_birth(rng, 2023, 2025).strftime("%Y%m%d")
    return day + rand_digits(rng, rng.choice((8, 10, 11, 12)))


def negative_makers() -> tuple[Callable[[random.Random], str], ...]:
    def order(rng: random.Random) -> str:
        return rng.choice(
            (
                "订单号{o}已发货，预计三天内送达。",
                "Order {o} was refunded on Friday.",
                "请查询订单{o}的物流状态",
                "采购单号：{o}，金额待确认",
                "订单编号【{o}】异常，请财务核对",
            )
        ).format(o=order_number(rng))

    def amount(rng: random.Random) -> str:
        n = rng.randint(100, 9_999_999)
        return rng.choice(
            (
                "本次报销金额¥{a}，请在月底前审批。",
                "合同总价：￥{a}元（含税）",
                "The invoice total is USD {a}.",
                "预算剩余{a}元，请控制开支",
            )
        ).format(a=f"{n:,}.{rng.randint(0, 99):02d}")

    def timestamp(rng: random.Random) -> str:
        t = dt.datetime(2025, 1, 1) + dt.timedelta(seconds=rng.randint(0, 365 * 86400))
        return rng.choice(
            (
                "会议时间：{a}，地点：3楼大会议室",
                "日志时间戳{b}，服务重启",
                "Uploaded at {a} by the design team.",
                "提交时间 {c}，请于{d}前完成评审。",
                "事件时间{e}（北京时间）",
            )
        ).format(
            a=t.strftime("%Y-%m-%d %H:%M:%S"),
            b=t.strftime("%Y%m%d%H%M%S"),
            c=t.strftime("%Y/%m/%d %H:%M"),
            d=t.strftime("%m月%d日"),
            e=t.strftime("%Y-%m-%dT%H:%M:%S+08:00"),
        )

    def invoice(rng: random.Random) -> str:
        return rng.choice(
            (
                "发票代码{a}，发票号码{b}，请核对抬头。",
                "电子发票号码：{c}",
                "Invoice No. {b} issued, code {a}.",
            )
        ).format(
            a="0" + rand_digits(rng, 11),
            b=rand_digits(rng, 8),
            c="25" + rng.choice(REGIONS)[:2] + "2000000" + rand_digits(rng, 9),
        )

    def wrong_id(rng: random.Random) -> str:
        return rng.choice(
            (
                "身份证号{v}校验失败，请用户重新上传。",
                "证件号码{v}格式有误",
                "ID {v} rejected by the verification service.",
            )
        ).format(v=fmt_plain_or_fullwidth(rng, rng.choice((bad_check_id, impossible_date_id))(rng)))

    def bad_phone(rng: random.Random) -> str:
        kind = rng.randrange(6)
        if kind == 4:
            v = group("12" + rand_digits(rng, 9), (3, 4, 4), rng.choice((" ", "-")))
        elif kind == 5:
            v = "+86 " + rng.choice(("10", "11", "12")) + rand_digits(rng, 9)
        elif kind == 0:
            v = "12" + rand_digits(rng, 9)
        elif kind == 1:
            v = "10" + rand_digits(rng, 9)
        elif kind == 2:
            v = rng.choice(MOBILE_PREFIXES) + rand_digits(rng, 7)
        else:
            v = rng.choice(MOBILE_PREFIXES) + rand_digits(rng, 9)
        return rng.choice(
            (
                "工号{v}的员工已离职",
                "客户编号：{v}",
                "电话{v}是空号，请确认",
                "Account ref {v} has no owner.",
            )
        ).format(v=v)

    def bad_card(rng: random.Random) -> str:
        v = bad_luhn_card(rng)
        if rng.randrange(2):
            v = group(v, (4, 4, 4, 4), " ")
        return rng.choice(
            (
                "卡号{v}校验不通过，付款失败。",
                "银行退回：账号{v}无效",
                "Card {v} was declined (invalid number).",
            )
        ).format(v=v)

    def version(rng: random.Random) -> str:
        v = ".".join(str(rng.randint(0, 20)) for _ in range(5))
        return rng.choice(
            (
                "客户端版本{v}修复了共享屏幕卡顿的问题",
                "请升级到 {v} 以上版本",
                "Release v{w} is out; see changelog.",
                "当前构建号 10.0.19045.{n}",
            )
        ).format(
            v=v, w=".".join(str(rng.randint(0, 20)) for _ in range(4)), n=rng.randint(1000, 9999)
        )

    def room(rng: random.Random) -> str:
        return rng.choice(
            (
                "会议室{a}已预订，参会人员共{n}人。",
                "腾讯会议号：{b}，密码{p}",
                "工位{c}的显示器坏了，请行政更换",
                "Meeting ID {b}, room {a}.",
            )
        ).format(
            a=rng.choice(("A-301", "B2-1105", "3F-12", "C-0808", "D1-201")),
            b=group(rand_digits(rng, 9), (3, 3, 3), rng.choice((" ", "-"))),
            c=f"{rng.randint(1, 30)}F-{rng.randint(1, 300):03d}",
            n=rng.randint(2, 40),
            p=rand_digits(rng, 4),
        )

    def tracking(rng: random.Random) -> str:
        v = rng.choice(
            (
                "SF" + rand_digits(rng, 13),
                "YT" + rand_digits(rng, 13),
                "JT" + rand_digits(rng, 13),
                "E" + rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") + rand_digits(rng, 9) + "CN",
                "773" + rand_digits(rng, 12),
                "75" + rand_digits(rng, 12),
            )
        )
        return rng.choice(
            (
                "快递单号{v}，已签收。",
                "Tracking number {v} shows delivered.",
                "合同原件已寄出，运单号：{v}",
            )
        ).format(v=v)

    def date(rng: random.Random) -> str:
        d = rand_birth(rng, 2020, 2026)
        return rng.choice(
            (
                "项目将于{a}上线，{b}开始灰度。",
                "截止日期：{c}",
                "Due date {d}; review on {c}.",
            )
        ).format(
            a=f"{d.year}年{d.month}月{d.day}日",
            b=d.strftime("%Y.%m.%d"),
            c=d.strftime("%Y/%m/%d"),
            d=d.isoformat(),
        )

    def not_ip(rng: random.Random) -> str:
        return rng.choice(
            (
                "地址256.1.1.1不是合法IP",
                "配置里写成了192.168.01.1，带前导零",
                "网段10.0.0没有写完整",
                "设备MAC地址00:1A:2B:3C:4D:5E需要加白名单",
                "时间 12:30:45 的日志缺失",
                "会议 10:00-11:30，地点待定",
                "std::vector<int> 的用法请参考文档",
                "比例为1:2:3，按部门人数分摊",
            )
        )

    def not_email(rng: random.Random) -> str:
        return rng.choice(
            (
                "@张三 请看一下这个需求",
                "测试账号admin@localhost只用于开发环境",
                "请回复user@，后面的域名漏写了",
                "邮箱a@b.c格式不对",
                "大家@所有人 明天9:00开会",
                "Ping @li.si about the budget.",
            )
        )

    def not_credit(rng: random.Random) -> str:
        return rng.choice(
            (
                "信用代码{v}校验位错误，请核对营业执照",
                "Vendor code {v} failed validation.",
            )
        ).format(v=bad_uscc(rng))

    def not_passport(rng: random.Random) -> str:
        return rng.choice(
            (
                "设备序列号XE{d8}已登记",
                "物料编码E{d9}入库",
                "型号PE{d8}X停产",
                "文件编号e{d8}归档",
                "批次号G{d7}待检",
            )
        ).format(d7=rand_digits(rng, 7), d8=rand_digits(rng, 8), d9=rand_digits(rng, 9))

    def long_number(rng: random.Random) -> str:
        return rng.choice(
            (
                "流水号{v}已入账",
                "Transaction {v} settled.",
                "订单号{o}包含了手机号片段",
            )
        ).format(
            v=rand_digits(rng, rng.choice((20, 21, 24))),
            o="2025" + rand_digits(rng, 2) + valid_phone(rng) + rand_digits(rng, 1),
        )

    def plain(rng: random.Random) -> str:
        return rng.choice(
            (
                "第3季度OKR已更新，共12项，完成率85.5%。",
                "本周五下午3点全员大会，请准时参加。",
                "Q3 planning: 4 workstreams, 2 new hires, budget +15%.",
                "共享文件夹容量已达95%，请清理超过90天的文件。",
                "请在2个工作日内回复，谢谢！",
            )
        )

    return (
        order,
        amount,
        timestamp,
        invoice,
        wrong_id,
        bad_phone,
        bad_card,
        version,
        room,
        tracking,
        date,
        not_ip,
        not_email,
        not_credit,
        not_passport,
        long_number,
        plain,
    )


def build(rng: random.Random) -> list[Line]:
    makers = _positive_makers()
    lines: list[Line] = []
    for category, templates in TEMPLATES.items():
        for i in range(24):
            value = makers[category](rng)
            template = templates[i % len(templates)]
            lines.append(
                {
                    "text": template.format(v=value),
                    "expect": [{"category": category, "value": value}],
                }
            )
    for i in range(30):
        template, categories = MULTI[i % len(MULTI)]
        values = {c: makers[c](rng) for c in categories}
        lines.append(
            {
                "text": template.format(**{SHORT[c]: v for c, v in values.items()}),
                "expect": [{"category": c, "value": values[c]} for c in categories],
            }
        )
    for text, expect in FIXED_POSITIVES:
        lines.append({"text": text, "expect": expect})
    negatives = negative_makers()
    seen: set[str] = set()
    for i in range(16 * len(negatives)):
        text = negatives[i % len(negatives)](rng)
        if text not in seen:
            seen.add(text)
            # A code made of a letter and nine digits may be a Taiwanese ID number, check and
            # all ("物料编码E144979129入库"): then one it is.
            tw = [w for w in TW_ANYWHERE.findall(text) if tw_ok(w)]
            expect = [{"category": ID, "value": v} for v in tw]
            # A device's MAC address among them ("设备MAC地址00:1A:2B:3C:4D:5E...") is one too.
            expect += [{"category": MAC, "value": v} for v in MAC_ANYWHERE.findall(text)]
            lines.append({"text": text, "expect": expect})
    # Last, so that what the seed draws for the lines above stays as it was.
    for i in range(24):
        hk = i % 2 == 0
        value = valid_hk_id(rng) if hk else valid_tw_id(rng)
        if i % 8 in (4, 5):
            value = fullwidth(value)
        templates = T_HK if hk else T_TW
        template = templates[i // 2 % len(templates)]
        lines.append(
            {"text": template.format(v=value), "expect": [{"category": ID, "value": value}]}
        )
    # MAC addresses, after the lines above for the same reason.
    for i in range(24):
        value = valid_mac(rng, i % 4)
        if i % 8 in (4, 5):
            value = fullwidth(value)
        template = T_MAC[i % len(T_MAC)]
        lines.append(
            {"text": template.format(v=value), "expect": [{"category": MAC, "value": value}]}
        )
    for text in NOT_MAC:
        lines.append({"text": text, "expect": []})
    # Coordinate pairs, after the lines above for the same reason.
    for i in range(24):
        value = valid_location(rng, i % 6)
        if i % 8 == 7:
            value = fullwidth(value)
        template = T_LOCATION[i % len(T_LOCATION)]
        lines.append(
            {"text": template.format(v=value), "expect": [{"category": LOCATION, "value": value}]}
        )
    for text in NOT_LOCATION:
        lines.append({"text": text, "expect": []})
    # Postal addresses, after the lines above for the same reason; one in four with a phone
    # number after it.
    for i in range(24):
        value = valid_address(rng, i % 6)
        expect = [{"category": ADDRESS, "value": value}]
        if i % 4 == 3:
            phone = valid_phone(rng)
            text = f"收件人：王女士，{value}，电话{phone}"
            expect.append({"category": PHONE, "value": phone})
        else:
            text = T_ADDRESS[i % len(T_ADDRESS)].format(v=value)
        lines.append({"text": text, "expect": expect})
    for text in NOT_ADDRESS:
        lines.append({"text": text, "expect": []})
    return lines


ID = "identity.id_number"
MAC = "device.device_id"
MAC_ANYWHERE = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}(?![0-9A-Za-z:])")
TW_ANYWHERE = re.compile(r"(?<![0-9A-Za-z])[A-Z][1289][0-9]{8}(?![0-9A-Za-z])")
T_HK = (
    "香港身份證號碼：{v}，請核對",
    "HKID {v} verified at the counter.",
    "旅客證件{v}已登記入住",
)
T_TW = (
    "身分證字號{v}，已完成實名認證",
    "Resident certificate no. {v}, issued in Taipei.",
    "台胞資料：統一證號{v}",
)


T_MAC = (
    "设备MAC地址{v}上线失败，请检查网线",
    "网卡{v}在凌晨3点掉线，已自动重启",
    "Link down on interface eth0 (hwaddr {v}).",
    "DHCP日志：客户端{v}续租失败",
    "会议室终端（MAC {v}）固件升级完成",
    "Device {v} failed the health check.",
)
# Shaped like a MAC address and none: no device, a seventh or missing pair, mixed separators, a
# longer hex string, an IPv6 address.
NOT_MAC = (
    "广播地址ff:ff:ff:ff:ff:ff不指向任何设备",
    "未配置的网卡上报MAC 00:00:00:00:00:00",
    "序列00:1A:2B:3C:4D:5E:6F多了一段",
    "日志里的MAC 00:1A:2B:3C:4D少了一段",
    "配置写成了00:1A-2B:3C:4D:5E，分隔符不一致",
    "Commit 00a1b2c3d4e5f6a7b8c9 fixed the crash.",
    "时间 12:34:56 的心跳包丢失",
)


LOCATION = "location.precise"
T_LOCATION = (
    "用户签到位置：{v}，已同步到考勤系统",
    "crash report: last fix {v} (accuracy 8m)",
    "维修师傅到达{v}附近，请保持电话畅通",
    "GPS {v} speed=0 heading=271",
    "客户发来定位{v}，说车停在这里",
    "Device reported location {v} before going offline.",
)
# Shaped like a coordinate pair and none: four decimals without keys, out of range, both below
# one, glued to more digits or letters, versions, addresses, dates and times.
NOT_LOCATION = (
    "两组的点击概率0.123456, 0.654321，差异显著",
    "坐标39.9042, 116.4074只精确到四位小数",
    "读数91.123456, 121.473701超出量程",
    "校准系数12.345678,190.123456需要复核",
    "版本1.234567,2.345678.9已回滚",
    "build v31.230416, 121.473701 failed",
    "固件版本1.2.31.230416, 2.0.121.473701已发布",
    "发布日期2025.03.15，归档于2025.03.16",
    "时间戳10:30:45.123456 12:30:45.654321",
    "序列号31.230416121.473701无效",
)


def valid_location(rng: random.Random, form: int) -> str:
    """A coordinate pair somewhere on land a device might be, written in ``form``: 0 a comma and
    a space, 1 a comma, 2 a space, 3 a full-width comma, 4 southern or western hemisphere, 5
    longitude first (as the Chinese map services write it)."""
    lat = rng.uniform(18.0, 53.0)
    lon = rng.uniform(73.0, 135.0)
    decimals = rng.choice((5, 6, 6, 7))
    a, b = f"{lat:.{decimals}f}", f"{lon:.{decimals}f}"
    if form == 4:
        a, b = f"{-rng.uniform(1.0, 45.0):.{decimals}f}", f"{-rng.uniform(1.0, 120.0):.{decimals}f}"
    if form == 5:
        a, b = b, a
    return a + (", ", ",", " ", "，", ", ", ",")[form] + b


ADDRESS = "contact.address"
PHONE = "contact.phone"
T_ADDRESS = (
    "请寄到{v}，谢谢",
    "地址：{v}",
    "客户住址{v}，上门维修请提前联系",
    "Delivery note: 送货地址{v}",
    "工单备注：用户家在{v}，周末在家",
    "快递员说包裹已放在{v}门口",
)
# Shaped like an address and none: an area without a number, a landmark, a street without one,
# a number with no street, words ending in 路 or 道 before a number.
NOT_ADDRESS = (
    "会议改在北京市朝阳区召开，具体地点另行通知",
    "周末去天安门广场和人民英雄纪念碑参观",
    "我在人民路上堵了半小时",
    "请查阅第3号文件和5楼会议室的预订记录",
    "路由器3号口掉线，已重启",
    "道路3号施工路段已封闭",
    "我知道88号是谁负责的",
    "地铁2号线和10号线换乘站在国贸",
    "建国路88号",
    "上海市浦东新区张江镇政府发布通知",
    "会议室1001室已经预订，请准时参加",
    "深南大道改造工程第3期本周完工",
)
PROVINCE_CITY_DISTRICT = (
    ("北京市", "", "朝阳区"),
    ("上海市", "", "浦东新区"),
    ("广东省", "深圳市", "南山区"),
    ("浙江省", "杭州市", "西湖区"),
    ("江苏省", "南京市", "鼓楼区"),
    ("四川省", "成都市", "武侯区"),
    ("天津市", "", "和平区"),
    ("湖北省", "武汉市", "洪山区"),
)
STREETS = words("建国路 碧波路 深南大道 文三路 中山北路 人民南路 解放大道 淮海中路 南锣鼓巷 长安街")
ESTATES = words("阳光小区 碧桂园 望京新村 翠苑 金色家园 滨江花园")


def valid_address(rng: random.Random, form: int) -> str:
    """A home address, written in ``form``: 0 administrative parts, street and number; 1 a
    street, number and building parts; 2 an estate, building and room; 3 all of them with a
    building's name; 4 full-width digits; 5 a room after a dash."""
    province, city, district = rng.choice(PROVINCE_CITY_DISTRICT)
    admin = province + city + district
    street = rng.choice(STREETS) + f"{rng.randint(1, 999)}号"
    building = f"{rng.randint(1, 30)}{rng.choice(('号楼', '栋', '幢'))}"
    room = f"{rng.randint(1, 30)}{rng.randint(1, 4):02d}室"
    if form == 0:
        return admin + street
    if form == 1:
        return street + building + room
    if form == 2:
        return rng.choice(ESTATES) + building + f"{rng.randint(1, 6)}单元" + room
    if form == 3:
        return admin + street + "SOHO现代城" + building + room
    if form == 4:
        return fullwidth(admin + street + building)
    return admin + street + f"-{rng.randint(1, 30)}{rng.randint(1, 4):02d}"


def valid_mac(rng: random.Random, form: int) -> str:
    """A MAC address of some device (never all zeros or all ones), written in ``form``: 0 and 1
    colons in upper and lower case, 2 hyphens, 3 three dotted groups of four."""
    octets = [rng.randrange(1, 255) for _ in range(6)]
    pairs = [f"{o:02x}" for o in octets]
    if form == 0:
        return ":".join(pairs).upper()
    if form == 1:
        return ":".join(pairs)
    if form == 2:
        return "-".join(pairs).upper()
    return ".".join("".join(pairs[i : i + 2]) for i in (0, 2, 4))


def main() -> None:
    rng = random.Random(SEED)
    lines = build(rng)
    with OUT.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
