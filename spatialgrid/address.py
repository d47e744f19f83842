"""Chinese address normalisation and parsing into GB/T 37149-2018 levels.

GB/T 37149-2018 (地名地址 — Place names and addresses) orders an address from the
largest to the smallest unit: province, prefecture (city), county/district,
subdistrict/town, community/village, road, door number (门牌号), named area /
compound (小区), building (楼栋号), unit (单元) and room (室).

:func:`normalize_address` folds the written variants seen in the field to one
form: full-width characters (NFKC), traditional characters common in addresses
(號 → 号, 棟 → 栋 ...), spaces and punctuation, Chinese numerals before a level
marker (三栋 → 3栋, 六十三号 → 63号; numerals inside names such as 五一路 stay),
building markers (幢, 号楼, 座, # → 栋) and the ``3-2-501`` shorthand
(building-unit-room). :func:`parse_address` then splits the normalised text into
levels with ordered regular expressions; whatever it cannot place stays in
``rest`` for the gazetteer's fuzzy matcher.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache

from spatialgrid.errors import InputError

#: Level names in GB/T 37149 order (as in :class:`ParsedAddress`).
LEVELS: tuple[str, ...] = (
    "province",
    "city",
    "district",
    "subdistrict",
    "community",
    "road",
    "number",
    "compound",
    "building",
    "unit",
    "room",
)

# Traditional → simplified for characters frequent in addresses (not a full table).
_TRAD = str.maketrans(
    "號棟樓單區縣鎮鄉東門園華環橋灣莊廣場陽興龍鳳匯達國學長開發豐寶麗觀團衛濱溝嶺滙庫藝裡裏夾雲葉錦綠湧銀鐵館濟軍楊萬與歲齊晉陳劉黃趙張鄭蘇漢壩臺檯會層戶",
    "号栋楼单区县镇乡东门园华环桥湾庄广场阳兴龙凤汇达国学长开发丰宝丽观团卫滨沟岭汇库艺里里夹云叶锦绿涌银铁馆济军杨万与岁齐晋陈刘黄赵张郑苏汉坝台台会层户",
)

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "○": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUM = "零〇○一二两三四五六七八九十百千"

_PUNCT = re.compile(r"[\s,，。.、:：;；\"'“”‘’()（）\[\]【】<>《》!！?？~～_·]+")
# Numerals before a level marker (not inside names like 五一路).
_CN_BEFORE_MARK = re.compile(
    rf"第?([{_CN_NUM}]+)(?=号楼|号|栋|幢|座|单元|室|层|楼|弄|#)"
)
_FIRST_NUM = re.compile(rf"第([{_CN_NUM}\d]+)")
_BUILDING_MARK = re.compile(r"(\d+[A-Z]?)(?:号楼|幢|座|#楼|#|栋)")
_SHORTHAND = re.compile(r"(\d+[A-Z]?)-(\d+)-(\d+)$")
_SHORTHAND2 = re.compile(r"(?<=[^\d-])(\d+[A-Z]?)-(\d+)$")

_MUNICIPALITIES = ("北京市", "上海市", "天津市", "重庆市")
_PROVINCE = re.compile(r"^(.{2,7}?(?:省|自治区|特别行政区))")
_CITY = re.compile(r"^(.{2,9}?(?:市|自治州|地区|盟))")
_DISTRICT = re.compile(r"^(.{1,8}?(?:新区|区|县|旗|市))")
_NOT_DISTRICT = ("小区", "社区", "园区", "校区", "厂区", "景区", "营区", "城区")
_SUBDISTRICT = re.compile(r"^(.{2,8}?(?:街道办事处|街道|镇|乡))")
_COMMUNITY = re.compile(r"^(.{2,10}?(?:社区居委会|社区居民委员会|社区|居委会|村委会))")
_ROAD = re.compile(r"^(.{1,14}?(?:大道|大街|路|街|巷|胡同|道))(?=\d|$|[^\d号]{2,})")
_NUMBER = re.compile(r"^(\d+(?:-\d+)?)号?")
_TAIL = re.compile(
    r"^(?P<compound>.*?)"
    r"(?:(?P<building>\d+[A-Z]?)栋)?"
    r"(?:(?P<unit>\d+)单元)?"
    r"(?:(?P<floor>\d+)[层楼])?"
    r"(?:(?P<room>\d+)(?:室|号|户)?)?$"
)


def chinese_to_int(text: str) -> int:
    """The integer written by a Chinese numeral (``"六十三"`` → 63, ``"一〇五"`` → 105).

    Raises
    ------
    InputError
        When ``text`` holds a character that is not a Chinese numeral.
    """
    if not text or any(ch not in _CN_DIGITS and ch not in _CN_UNITS for ch in text):
        msg = f"text={text!r} is not a Chinese numeral (use 零一二三...十百千)"
        raise InputError(msg)
    if not any(ch in _CN_UNITS for ch in text):  # digit by digit: 一〇五
        return int("".join(str(_CN_DIGITS[ch]) for ch in text))
    total, current = 0, 0
    for ch in text:
        if ch in _CN_DIGITS:
            current = _CN_DIGITS[ch]
        else:
            unit = _CN_UNITS[ch]
            total += (current or 1) * unit
            current = 0
    return total + current


@lru_cache(maxsize=65_536)
def normalize_address(text: str) -> str:
    """One canonical spelling of an address (see the module notes).

    Examples
    --------
    >>> normalize_address("南环路 ６３ 號")
    '南环路63号'
    >>> normalize_address("翠柏华庭三幢二单元501室")
    '翠柏华庭3栋2单元501室'
    """
    s = unicodedata.normalize("NFKC", str(text)).translate(_TRAD).upper()
    s = _PUNCT.sub("", s)
    s = s.replace("－", "-").replace("—", "-").replace("–", "-")
    s = _CN_BEFORE_MARK.sub(lambda m: str(chinese_to_int(m.group(1))), s)
    s = _FIRST_NUM.sub(
        lambda m: (
            m.group(1) if m.group(1).isdigit() else str(chinese_to_int(m.group(1)))
        ),
        s,
    )
    s = _BUILDING_MARK.sub(r"\1栋", s)
    s = s.replace("单元", "单元").replace("单元号", "单元")
    m = _SHORTHAND.search(s)
    if m and "栋" not in s:
        s = s[: m.start()] + f"{m.group(1)}栋{m.group(2)}单元{m.group(3)}室"
    else:
        m2 = _SHORTHAND2.search(s)
        if m2 and "栋" not in s and "号" not in s[m2.start() :]:
            s = s[: m2.start()] + f"{m2.group(1)}栋{m2.group(2)}单元"
    return s


@dataclass(frozen=True)
class ParsedAddress:
    """An address split into GB/T 37149 levels (``None`` = level absent).

    ``rest`` holds normalised text that no rule placed (often a compound or POI
    name written without a known suffix); ``normalized`` is the whole canonical
    string.
    """

    normalized: str
    province: str | None = None
    city: str | None = None
    district: str | None = None
    subdistrict: str | None = None
    community: str | None = None
    road: str | None = None
    number: str | None = None
    compound: str | None = None
    building: str | None = None
    unit: str | None = None
    room: str | None = None
    rest: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The levels as a plain dict."""
        return asdict(self)


def _take(pattern: re.Pattern[str], s: str) -> tuple[str | None, str]:
    m = pattern.match(s)
    if not m:
        return None, s
    return m.group(1), s[m.end(1) :]


@lru_cache(maxsize=65_536)
def parse_address(text: str) -> ParsedAddress:
    """Split an address into GB/T 37149 levels after :func:`normalize_address`.

    Parameters
    ----------
    text
        A free-form Chinese address, e.g.
        ``"湖北省荆州市荆州区长安街道南环路63号翠柏华庭3栋2单元501室"``.

    Returns
    -------
    ParsedAddress
        The levels found; a level written nowhere is ``None``.

    Notes
    -----
    Administrative levels are taken from the front in order, each optional; a
    municipality (北京市 ...) is both province and city. A road is text ending in
    路/街/大道/大街/巷/胡同/道 followed by a door number or a name; what follows
    the door number up to the building number is the compound. Without a road, a
    number right after the compound name (``凤凰小区3号``) is read as a building.
    """
    s = normalize_address(text)
    levels: dict[str, str | None] = {}
    for city in _MUNICIPALITIES:
        if s.startswith(city):
            levels["province"] = levels["city"] = city
            s = s[len(city) :]
            break
    else:
        levels["province"], s = _take(_PROVINCE, s)
        levels["city"], s = _take(_CITY, s)
    district, rest = _take(_DISTRICT, s)
    if district is not None and not district.endswith(_NOT_DISTRICT):
        levels["district"], s = district, rest
    levels["subdistrict"], s = _take(_SUBDISTRICT, s)
    levels["community"], s = _take(_COMMUNITY, s)
    road, rest = _take(_ROAD, s)
    if road is not None:
        levels["road"], s = road, rest
        m = _NUMBER.match(s)
        if m:
            levels["number"] = m.group(1)
            s = s[m.end() :]
    elif (m := re.match(r"^(.+?\D)(\d+[A-Z]?)号$", s)) is not None:
        # 凤凰小区3号: a number after a compound name is a building
        s = f"{m.group(1)}{m.group(2)}栋"
    tail = _TAIL.match(s)
    rest_text: str | None = None
    if tail:
        compound = tail.group("compound") or None
        levels["building"] = tail.group("building")
        levels["unit"] = tail.group("unit")
        levels["room"] = tail.group("room")
        if (
            compound
            and not (levels["building"] or levels["unit"] or levels["room"])
            and compound.isdigit()
        ):
            compound = None
        levels["compound"] = compound
    else:  # pragma: no cover - _TAIL matches any string
        rest_text = s or None
    return ParsedAddress(normalized=normalize_address(text), rest=rest_text, **levels)
