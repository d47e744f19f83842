"""Chinese address normalisation and GB/T 37149 level parsing."""

from __future__ import annotations

import pytest

from spatialgrid.address import chinese_to_int, normalize_address, parse_address
from spatialgrid.errors import InputError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("三", 3),
        ("十", 10),
        ("十二", 12),
        ("二十", 20),
        ("六十三", 63),
        ("一百零五", 105),
        ("一〇五", 105),
        ("两千零一", 2001),
    ],
)
def test_chinese_numerals(text, value):
    assert chinese_to_int(text) == value


def test_chinese_numeral_rejects_other_text():
    with pytest.raises(InputError, match="not a Chinese numeral"):
        chinese_to_int("三a")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("南环路６３號", "南环路63号"),
        ("南環路 63 号", "南环路63号"),
        ("南环路六十三号", "南环路63号"),
        ("翠柏华庭三幢二单元501室", "翠柏华庭3栋2单元501室"),
        ("翠柏华庭3号楼2单元", "翠柏华庭3栋2单元"),
        ("翠柏华庭3座", "翠柏华庭3栋"),
        ("翠柏华庭3#2单元", "翠柏华庭3栋2单元"),
        ("翠柏华庭 3-2-501", "翠柏华庭3栋2单元501室"),
        ("翠柏华庭第三栋", "翠柏华庭3栋"),
        ("五一路12号", "五一路12号"),  # numerals inside names stay
        ("三里屯路1号", "三里屯路1号"),
    ],
)
def test_normalize_variants(text, expected):
    assert normalize_address(text) == expected


def test_parse_full_address():
    p = parse_address(
        "湖北省荆州市荆州区长安街道墨香社区南环路63号翠柏华庭3栋2单元501室"
    )
    assert p.province == "湖北省"
    assert p.city == "荆州市"
    assert p.district == "荆州区"
    assert p.subdistrict == "长安街道"
    assert p.community == "墨香社区"
    assert p.road == "南环路"
    assert p.number == "63"
    assert p.compound == "翠柏华庭"
    assert (p.building, p.unit, p.room) == ("3", "2", "501")


def test_parse_missing_levels_and_municipality():
    p = parse_address("北京市朝阳区建国路88号")
    assert (p.province, p.city, p.district) == ("北京市", "北京市", "朝阳区")
    assert (p.road, p.number, p.compound, p.building) == ("建国路", "88", None, None)
    p = parse_address("凤凰小区6栋")
    assert (p.district, p.compound, p.building, p.unit) == (None, "凤凰小区", "6", None)
    # a number right after a compound name is a building number
    p = parse_address("凤凰小区3号")
    assert (p.compound, p.building) == ("凤凰小区", "3")
    p = parse_address("人民大道")
    assert (p.road, p.number) == ("人民大道", None)


def test_compound_ending_in_qu_is_not_a_district():
    p = parse_address("幸福小区2栋")
    assert p.district is None
    assert p.compound == "幸福小区"


def test_empty_and_garbage_do_not_raise():
    assert parse_address("").compound is None
    assert parse_address("!!!").normalized == ""
    assert parse_address("asdf").road is None
