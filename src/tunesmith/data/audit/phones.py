"""Phone numbers, by Google's libphonenumber (the `phonenumbers` port): its matcher finds the
candidates and its per-country metadata decides which are numbers, so years, dates, ids and
EINs written with spaces or dashes ("1999 2000 2001", "2023 1234 5678", "12-3456789") are not.

Which country a number belongs to:
- written with its country code (+33 1 23 45 67 89, +91 98765 43210, 0044 20 7946 0958,
  011 44 20 7946 0958): any country;
- written in national format, without a country code: read as a UK number when it begins with the
  trunk prefix 0 (07700 900123, (020) 7946 0958), otherwise as a US or Canadian one
  ((415) 555-0132, 1-415-555-0132). These are the two national formats of most English data;
  other countries' national formats ("06 12 34 56 78" in France) are not reported.

Accepted: numbers libphonenumber holds valid; written without a country code, only when their
digits are also grouped as the country groups them (Leniency.STRICT_GROUPING: "5-315-94524-3", an
ISBN, and "2023-304013", an order number, are valid US numbers in a grouping no one dials). Also
numbers written with a country code or the trunk prefix 0 in exactly the grouping libphonenumber
formats them with, where its metadata has no range (Ofcom's numbers for drama, 07700 900xxx, or a
new range). A number written as one run of digits without a + ("4155550132") is left alone: an id,
a count or a timestamp is likelier.

libphonenumber's matcher costs tens of microseconds per candidate, more than linear on long digit
runs, and gives up after a number of failed candidates; so a cheap, linear pattern picks out the
phone-shaped stretches first (7 to 20 digits between separators), and the matcher looks only at
each stretch and the characters around it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher

NATIONAL_REGION = "US"  # for national numbers not beginning with the trunk prefix 0
TRUNK_ZERO_REGION = "GB"  # for national numbers beginning with 0

_SEPARATOR = "[ .\\-/()\u00a0\u2010-\u2015]"
# 7 to 20 digits, at most 3 separators between two of them, not glued to a word, a '+' or another
# run of digits, not beginning with a list's "1. " or "2) " (the number after it is one): possessive,
# so that each start costs at most one pass over 20 digits
_SHAPE = re.compile(rf"(?<![0-9A-Za-z+])(?<![0-9]{_SEPARATOR})(?!\d[.)]\s)"
                    rf"[+(]{{0,2}}\d(?:{_SEPARATOR}{{0,3}}+\d){{6,19}}+(?!{_SEPARATOR}{{0,3}}\d)")
# the characters around a stretch that the matcher sees: a letter next to the number makes it part of
# a word; ":30" after a date makes it a time. One before, so that no candidate reaches back past it.
_BEFORE, _AFTER = 1, 3
_GROUPS = re.compile(r"\d+")
_PARTS = re.compile(r"[\s.]+")


def find_phones(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each phone number in `text`, in order."""
    for shape in _SHAPE.finditer(text):
        start = max(0, shape.start() - _BEFORE)
        window = text[start:shape.end() + _AFTER]
        for offset, end in _phones_in(window, shape.start() - start, shape.end() - start):
            yield start + offset, start + end


@functools.lru_cache(maxsize=4096)  # a number that recurs (a support line in every reply) is parsed once
def _phones_in(window: str, shape_start: int, shape_end: int) -> tuple[tuple[int, int], ...]:
    """The numbers in `window`, whose phone-shaped stretch is window[shape_start:shape_end]."""
    written = window[shape_start:shape_end].lstrip("(")
    if not _may_hold_a_number(written):
        return ()
    # "011 44 ..." is the US way to dial abroad; "0113 496 0000" a number in Leeds
    us_abroad = written.startswith("011") and not written[3:4].isdigit()
    region = TRUNK_ZERO_REGION if written.startswith("0") and not us_abroad else NATIONAL_REGION
    leniency = Leniency.VALID if written.startswith("+") else Leniency.STRICT_GROUPING
    found = tuple((m.start, m.end) for m in PhoneNumberMatcher(window, region, leniency=leniency)
                  if not m.raw_string.isdigit() and shape_start <= m.start and m.end <= shape_end)
    if found or not written.startswith(("+", "0")) or window[shape_end:shape_end + 1].isalpha():
        return found
    return ((shape_start, shape_end),) if _grouped_as_formatted(window[shape_start:shape_end], region) else ()


def _may_hold_a_number(written: str) -> bool:
    """False where the matcher cannot find a number, so that it is not asked (it costs ~100 us a
    stretch): more digits than a national number holds (11: US with its 1, UK with its 0) and no place
    where the matcher splits a stretch into several numbers ('/', '(', a spaced dash), nor a part
    between spaces or dots with the 7 digits a number needs ("2023 1234 5678", a card-like id)."""
    if written.startswith(("+", "00", "011")) or _digits(written) <= 11:
        return True
    if "/" in written or "(" in written or " -" in written or "- " in written:
        return True
    return any(_digits(part) >= 7 for part in _PARTS.split(written))


def _digits(text: str) -> int:
    return sum(char.isdigit() for char in text)


def _grouped_as_formatted(written: str, region: str) -> bool:
    """A possible number of 8 digits or more with a country code or trunk prefix, its digits grouped
    exactly as libphonenumber formats it: a number in a range the metadata does not list, not an id."""
    try:
        number = phonenumbers.parse(written, region)
    except phonenumbers.NumberParseException:
        return False
    if len(phonenumbers.national_significant_number(number)) < 8 or not phonenumbers.is_possible_number(number):
        return False
    groups = _GROUPS.findall(written.replace("(0)", ""))
    return any(groups == _GROUPS.findall(phonenumbers.format_number(number, style))
               for style in (PhoneNumberFormat.NATIONAL, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.E164))
