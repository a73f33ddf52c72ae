"""The batch format: URL-encoding, column mapping and row validation (pure functions)."""

from __future__ import annotations

import re
import string
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uploader.encode import (
    check_rows,
    encode_row,
    encode_rows,
    encode_value,
    header_line,
    id_problem,
    plan_columns,
    profile_bytes,
)
from uploader.errors import InputError
from uploader.settings import InputSettings
from uploader.states import RejectReason

SAFE = set(string.ascii_letters + string.digits + "-._~")
# Text with everything that breaks form data, plus the block encoder's own separators.
NASTY = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(',"\n\r%&+=#?; \t\x00\x01\\/~-._')),
        st.characters(codec="utf-8"),
    ),
    max_size=12,
)
SURROGATE = st.sampled_from(["\udc80", "\udcff", "\udce9"])


def form_decode(line: bytes) -> list[str]:
    """Decode one encoded line as form data is decoded, refusing anything ambiguous."""
    assert re.fullmatch(rb"[A-Za-z0-9\-._~%,]*", line), line
    assert not re.search(rb"%(?![0-9A-F]{2})", line), line
    return [unquote_to_bytes(v).decode("utf-8") for v in line.split(b",")]


def trimmed(row: list[str]) -> list[str]:
    while len(row) > 1 and row[-1] == "":
        row = row[:-1]
    return row


def test_encode_value_encodes_everything_outside_the_unreserved_set() -> None:
    assert encode_value("AZaz09-._~") == "AZaz09-._~"
    assert encode_value("a b,c%d&e+f=g/h?i#j\nk\"l'") == (
        "a%20b%2Cc%25d%26e%2Bf%3Dg%2Fh%3Fi%23j%0Ak%22l%27"
    )
    assert encode_value("é€😀") == "%C3%A9%E2%82%AC%F0%9F%98%80"


def test_every_single_character_round_trips() -> None:
    for code in [*range(0x800), 0xFFFD, 0x1F600]:
        ch = chr(code)
        line = encode_rows([["id", ch]])[0]
        assert line is not None
        assert form_decode(line) == trimmed(["id", ch])
        assert line == encode_row(["id", ch])


def test_rows_are_trimmed_and_separators_in_data_are_encoded() -> None:
    rows = [["C1", "gold", "", ""], ["C2", "", "x"], ["C3", "a\x00b", "c\x01d"], ["C4"]]
    assert encode_rows(rows) == [b"C1,gold", b"C2,,x", b"C3,a%00b,c%01d", b"C4"]


def test_undecodable_bytes_give_none_for_that_row_only() -> None:
    rows = [["C1", "ok"], ["C2", "bad\udce9"], ["C3", "fine"]]
    assert encode_rows(rows) == [b"C1,ok", None, b"C3,fine"]


def test_header_line() -> None:
    assert header_line(["thirdPartyId", "loyalty tier", "a&b"]) == (
        b"batch=thirdPartyId,loyalty%20tier,a%26b"
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(NASTY, min_size=1, max_size=6), min_size=1, max_size=20))
def test_block_encoder_equals_reference_and_decodes_back(rows: list[list[str]]) -> None:
    encoded = encode_rows(rows)
    assert encoded == [encode_row(r) for r in rows]
    for row, line in zip(rows, encoded, strict=True):
        assert line is not None
        assert b"\n" not in line
        assert form_decode(line) == trimmed(row)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(NASTY, SURROGATE), min_size=1, max_size=4), max_size=10))
def test_rows_with_surrogates_and_only_those_are_none(rows: list[list[str]]) -> None:
    encoded = encode_rows(rows)
    for row, line in zip(rows, encoded, strict=True):
        has_surrogate = any("\udc80" <= c <= "\udcff" for v in row for c in v)
        assert (line is None) == has_surrogate


@pytest.mark.parametrize(
    ("value", "third_party", "expected"),
    [
        ("C1", True, None),
        ("", True, RejectReason.MISSING_ID),
        ("a+b", True, RejectReason.INVALID_ID),
        ("a/b", True, RejectReason.INVALID_ID),
        ("a+b/c", False, None),
        ("a\tb", False, RejectReason.INVALID_ID),
        ("a\x85b", True, RejectReason.INVALID_ID),
        ("a\u00a0b", True, None),
        ("é😀", True, None),
        ("   ", True, RejectReason.MISSING_ID),
        ("\u00a0\t", False, RejectReason.MISSING_ID),
        (" C1", True, RejectReason.INVALID_ID),
        ("C1 ", False, RejectReason.INVALID_ID),
        ("C1\u00a0", True, RejectReason.INVALID_ID),
        ("C 1", True, None),
    ],
)
def test_id_problem(value: str, third_party: bool, expected: RejectReason | None) -> None:
    assert id_problem(value, third_party=third_party) is expected


def test_plan_default_sends_every_column_with_the_id_type_first() -> None:
    plan = plan_columns(["cid", "tier", "ltv"], InputSettings(), "x.csv:1")
    assert plan.names == ("thirdPartyId", "tier", "ltv")
    assert plan.sources == ("cid", "tier", "ltv")
    assert plan.picks is None
    assert plan.project() is None


def test_plan_id_column_anywhere_columns_and_rename() -> None:
    settings_ = InputSettings(
        id_column="cid", id_type="pcId", columns=("ltv", "tier"), rename={"ltv": "lifetimeValue"}
    )
    plan = plan_columns(["tier", "skip", "cid", "ltv"], settings_, "x.csv:1")
    assert plan.names == ("pcId", "lifetimeValue", "tier")
    assert plan.sources == ("cid", "ltv", "tier")
    assert plan.picks == (2, 3, 0)
    project = plan.project()
    assert project is not None
    assert list(project(["g", "s", "C1", "10"])) == ["C1", "10", "g"]
    assert list(project(["g"])) == ["", "", "g"]


def test_plan_only_the_id_column() -> None:
    plan = plan_columns(["a", "cid"], InputSettings(id_column="cid", columns=()), "x:1")
    assert plan.names == ("thirdPartyId",)
    project = plan.project()
    assert project is not None
    assert list(project(["x", "C9"])) == ["C9"]


def test_a_missing_column_names_the_nearest_one() -> None:
    header = ["customerId", "loyaltyTier", "ltv"]
    with pytest.raises(InputError) as err:
        plan_columns(header, InputSettings(id_column="customerid"), "x.csv:1")
    assert str(err.value) == (
        "x.csv:1: id column 'customerid' not found in the header; did you mean 'customerId'? "
        "(column names are case-sensitive)"
    )
    with pytest.raises(InputError) as err:
        plan_columns(header, InputSettings(columns=("loyaltyTeir",)), "x.csv:1")
    assert str(err.value) == (
        "x.csv:1: column 'loyaltyTeir' not found in the header; did you mean 'loyaltyTier'?"
    )
    with pytest.raises(InputError) as err:
        plan_columns(header, InputSettings(id_column="email"), "x.csv:1")
    assert str(err.value) == "x.csv:1: id column 'email' not found in the header"


@pytest.mark.parametrize(
    ("header", "kwargs", "message"),
    [
        (["a", "b"], {"id_column": "id"}, "x.csv:1: id column 'id' not found in the header"),
        (["id", "b", "id"], {"id_column": "id"}, "x.csv:1: id column 'id' appears 2 times"),
        (["id", "b"], {"columns": ("c",)}, "x.csv:1: column 'c' not found in the header"),
        (["id", "b"], {"rename": {"z": "y"}}, "x.csv:1: renamed column 'z' not found"),
        (["id", ""], {}, "x.csv:1: empty column name in the header"),
        (["id", "b", "b"], {}, "x.csv:1: duplicate column name 'b' in the header"),
        (["a", "a"], {}, "x.csv:1: duplicate column name 'a' in the header"),
        (["", "a"], {}, "x.csv:1: empty column name in the header"),
        (["id", "b", "c"], {"rename": {"c": "b"}}, "x.csv:1: duplicate column name 'b'"),
        (["id", "thirdPartyId"], {}, "x.csv:1: duplicate column name 'thirdPartyId'"),
        (["id", "b"], {"rename": {"b": " "}}, "x.csv:1: empty column name in the header"),
    ],
)
def test_plan_errors(header: list[str], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        plan_columns(header, InputSettings(**kwargs), "x.csv:1")  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


def test_check_rows_reasons_and_order() -> None:
    plan = plan_columns(["id", "a", "b"], InputSettings(), "x:1")
    rows = [["C1", "x"], ["", "x"], ["C+3"], ["C4", "1", "2", "3"], ["C5\n"], ["C6", "", ""]]
    keep, lines, originals, rejects, short = check_rows(rows, [2, 3, 4, 5, 7, 9], plan)
    assert short == [2]
    assert keep == [["C1", "x"], ["C6", "", ""]]
    assert lines == [2, 9]
    assert originals == keep
    assert [(r.line, r.reason, r.id) for r in rejects] == [
        (3, RejectReason.MISSING_ID, ""),
        (4, RejectReason.INVALID_ID, "C+3"),
        (5, RejectReason.TOO_MANY_FIELDS, "C4"),
        (7, RejectReason.INVALID_ID, "C5\n"),
    ]


def test_check_rows_with_id_column_not_first_and_short_rows() -> None:
    plan = plan_columns(["a", "id"], InputSettings(id_column="id"), "x:1")
    keep, lines, originals, rejects, short = check_rows([["x", "C1"], ["y"]], [2, 3], plan)
    assert lines == [2]
    assert short == []  # the short row is rejected for its missing id, and counted once
    assert [list(k) for k in keep] == [["C1", "x"]]
    assert originals == [["x", "C1"]]
    assert [(r.line, r.reason) for r in rejects] == [(3, RejectReason.MISSING_ID)]


ROWS_WITH_SPACES = [["C1", "a", "b"], [" C2", "a", "b"], ["   ", "a", "b"], ["C4 ", "a"], ["C5"]]


def test_ids_with_surrounding_whitespace_are_invalid_by_default() -> None:
    plan = plan_columns(["id", "a", "b"], InputSettings(), "x:1")
    checked = check_rows(ROWS_WITH_SPACES, [2, 3, 4, 5, 6], plan)
    assert checked.keep == [["C1", "a", "b"], ["C5"]]
    assert [(r.line, r.reason.value, r.id) for r in checked.rejects] == [
        (3, "invalid_id", " C2"),
        (4, "missing_id", "   "),
        (5, "invalid_id", "C4 "),
    ]
    assert checked.short == [6]


def test_strip_ids_trims_and_sends_and_short_rows_reject() -> None:
    plan = plan_columns(["id", "a", "b"], InputSettings(strip_ids=True, short_rows="reject"), "x:1")
    checked = check_rows(ROWS_WITH_SPACES, [2, 3, 4, 5, 6], plan)
    assert checked.keep == [["C1", "a", "b"], ["C2", "a", "b"]]
    assert checked.originals == [["C1", "a", "b"], [" C2", "a", "b"]]
    assert [(r.line, r.reason.value, r.id) for r in checked.rejects] == [
        (4, "missing_id", "   "),
        (5, "too_few_fields", "C4 "),
        (6, "too_few_fields", "C5"),
    ]
    assert checked.short == [5, 6]


def test_profile_bytes_counts_decoded_utf8_bytes_of_the_values() -> None:
    row = ["C1", "é" * 11_000, "a,b", ""]
    line = encode_row(row)
    assert line is not None and len(line) == 2 + 1 + 66_000 + 1 + 5
    assert profile_bytes(line) == sum(len(v.encode()) for v in row) == 2 + 22_000 + 3
