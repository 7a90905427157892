"""Personal and secret data: found by pattern, confirmed by checksum or registry where a format has one.

Built in and offline: e-mail addresses, phone numbers (Google's libphonenumber: see phones.py for
which countries' national formats are read), payment card numbers (the issuers' IIN ranges and
lengths, then Luhn), IBANs (ISO 13616 mod-97), IPv4 and IPv6 addresses, US social security numbers
(the SSA's ranges), UK national insurance numbers (HMRC's prefix rules), URLs with a password, API
keys by their published prefixes, private-key blocks, and long high-entropy tokens. A checksum or a
range turns most look-alikes away (a 16-digit order number that fails Luhn, or passes it outside
every issuer's range, is not a card; a year list is not a phone number). `scrub` puts a typed
placeholder in each place and changes nothing else. Patterns, not a model: Presidio's pattern
recognizers work the same way, and its NER-based ones need a spaCy model that this machine does not have.

Every detector is linear in the row's length, whatever the row holds: a 1 MB row of "a.a.a...@",
of digits or of 100,000 e-mail addresses takes well under a second, where backtracking patterns
took minutes to hours (holding the GIL, so a job worker's heartbeat stopped). Patterns that would
retry a long run from each of its characters (an e-mail's local part, a URL's scheme, a key block
without its END line) are found from their anchor ('@', '://', the BEGIN line) instead, with the
same matches as the plain pattern. The dearest rows are those packed with phone-shaped numbers:
libphonenumber takes about 0.1-0.3 ms for each (up to ~15 s for 1 MB of nothing else), in Python,
so other threads keep running.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tunesmith.data.audit.phones import find_phones
from tunesmith.errors import ConfigError


@dataclass(frozen=True)
class Found:
    kind: str  # EMAIL, PHONE, CARD, IBAN, IP, SSN, NINO, URL_CREDENTIALS, API_KEY, PRIVATE_KEY, SECRET
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    total = 0
    for n, char in enumerate(reversed(digits)):
        d = int(char)
        if n % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# issuer -> ((first, last) of the leading digits, lengths): the IIN ranges the networks publish (as
# tabled in Wikipedia's "Payment card number"). Visa's retired 13-digit numbers are left out: 13
# digits beginning with 4 are far more often an EAN-13 barcode (GS1's prefixes 400-440 are Germany's).
CARD_ISSUERS: dict[str, tuple[tuple[tuple[int, int], ...], range]] = {
    "Visa": (((4, 4),), range(16, 20, 3)),
    "Mastercard": (((51, 55), (2221, 2720)), range(16, 17)),
    "American Express": (((34, 34), (37, 37)), range(15, 16)),
    "Discover": (((6011, 6011), (644, 649), (65, 65), (622126, 622925)), range(16, 20)),
    "JCB": (((3528, 3589),), range(16, 20)),
    "Diners Club": (((300, 305), (3095, 3095), (36, 36), (38, 39)), range(14, 20)),
    "UnionPay": (((62, 62), (81, 81)), range(16, 20)),
    "Maestro": (((5018, 5018), (5020, 5020), (5038, 5038), (5893, 5893), (6304, 6304), (6759, 6759),
                 (6761, 6763)), range(13, 20)),  # 12-digit Maestro numbers too, but rarely; 12-digit ids often
}


def card_issuer(digits: str) -> str | None:
    """The network whose IIN range and length `digits` fits, or None."""
    for issuer, (ranges, lengths) in CARD_ISSUERS.items():
        if len(digits) in lengths and any(low <= int(digits[:len(str(low))]) <= high for low, high in ranges):
            return issuer
    return None


def _grouped_like_a_card(text: str) -> bool:
    """One run of digits, or the groups printed on cards: fours (the last may be shorter), 4-6-5
    (American Express) or 4-6-4 (Diners Club), with one kind of separator; not "38 5 38 24 45 9"."""
    sizes = [len(group) for group in re.split(r"[ -]", text)]
    if len(sizes) == 1:
        return True
    if " " in text and "-" in text:
        return False
    return (sizes[:-1] == [4] * (len(sizes) - 1) and sizes[-1] <= 4) or sizes in ([4, 6, 5], [4, 6, 4])


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return (_grouped_like_a_card(text) and card_issuer(digits) is not None and luhn_ok(digits)
            and len(set(digits)) > 1)


def _ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.version == 6:  # "a:b::c" is an address too; text with a digit and some length is likelier one
        return len(text) >= 6 and any(c.isdigit() for c in text)
    return not address.is_unspecified


def _ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def _secret(text: str) -> bool:
    """A long token mixing letters and digits with the entropy of random bytes, not a word or a hash of a word."""
    return (bool(re.search(r"\d", text)) and bool(re.search(r"[a-z]", text)) and bool(re.search(r"[A-Z]", text))
            and _entropy(text) >= 4.0)


Spans = Iterator[tuple[int, int]]


def _matches(pattern: re.Pattern[str], check: Callable[[str], bool] | None = None) -> Callable[[str], Spans]:
    """A finder for a pattern whose every match is bounded or possessive (no long run retried)."""
    def find(text: str) -> Spans:
        return ((m.start(), m.end()) for m in pattern.finditer(text) if check is None or check(m.group()))
    return find


def _anchored(run: str, anchor: str, head: str, tail: str) -> Callable[[str], Spans]:
    """A finder for the plain pattern `head run* anchor tail`, where `run` is a character class,
    e.g. an e-mail: local part, '@', domain.

    The plain pattern tries each character of a long run as its start, scans to the run's end and
    fails there: quadratic. Here a possessive run that only starts where the run does finds each run
    ending at the anchor; `head` gives the first place in it where the plain pattern could start, and
    `tail` is matched from the anchor, once: the same leftmost matches, in linear time.
    """
    runs = re.compile(f"(?<!{run}){run}++{re.escape(anchor)}")
    starts, rest_of = re.compile(head), re.compile(re.escape(anchor) + tail)

    def find(text: str) -> Spans:
        done = 0  # a match never starts inside the previous one
        for match in runs.finditer(text):
            at = match.end() - len(anchor)
            if at < done:
                continue
            start = starts.search(text, max(match.start(), done), at)
            rest = rest_of.match(text, at) if start and start.start() < at else None
            if rest:
                done = rest.end()
                yield start.start(), done
    return find


_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")


def _key_blocks(text: str) -> Spans:
    """BEGIN ... PRIVATE KEY----- to the first END line after it; once no END line follows, no later
    BEGIN can have one either (what a lazy pattern rediscovers from every BEGIN: quadratic)."""
    at = 0
    while begin := _KEY_BEGIN.search(text, at):
        end = _KEY_END.search(text, begin.end())
        if end is None:
            return
        yield begin.start(), end.end()
        at = end.end()


# \b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b
_EMAIL = _anchored("[A-Za-z0-9._%+-]", "@", r"\b", r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# \b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@[^\s/]+
_URL_CREDENTIALS = _anchored("[a-z0-9+.-]", "://", r"\b[a-z]", r"[^\s:/@]+:[^\s/@]+@[^\s/]+")
_DIGIT = re.compile(r"\d")


def _has(marker: str) -> Callable[[str], bool]:
    return lambda text: marker in text


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _always(text: str) -> bool:
    return True


# (kind, a cheap test that must pass before the finder runs, finder): the order is the order of
# precedence where two overlap. Each pattern scan costs about as much as the pre-tests of all of them,
# and most rows hold no '@', '://', '-' or ':'.
DETECTORS: list[tuple[str, Callable[[str], bool], Callable[[str], Spans]]] = [
    ("PRIVATE_KEY", _has("-----BEGIN"), _key_blocks),
    ("URL_CREDENTIALS", _has("://"), _URL_CREDENTIALS),
    ("API_KEY", _always, _matches(re.compile(
        r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|sk_live_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{36,}"
        r"|github_pat_[A-Za-z0-9_]{40,}|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z]{30,})"))),
    ("EMAIL", _has("@"), _EMAIL),
    ("IBAN", _has_digit, _matches(re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), iban_ok)),
    ("CARD", _has_digit, _matches(re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card)),
    ("SSN", _has("-"), _matches(re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), _ssn)),
    ("NINO", _has_digit, _matches(re.compile(
        r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"))),
    # a full stop after the address ends a sentence; a digit after it makes a longer dotted number
    ("IP", _has("."), _matches(re.compile(r"(?<!\w)(?<!\w\.)\d{1,3}(?:\.\d{1,3}){3}(?!\w)(?!\.\w)"), _ip)),
    ("IP", _has(":"), _matches(re.compile(
        r"(?<![\w:])(?:[0-9a-fA-F]{1,4}|(?=::))(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])"), _ip)),
    ("PHONE", _has_digit, find_phones),
    ("SECRET", _has_digit, _matches(re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9_+/=-]{32,}(?![A-Za-z0-9])"), _secret)),
]
KINDS = list(dict.fromkeys(kind for kind, _, _ in DETECTORS))


def find_pii(text: str) -> list[Found]:
    """Every finding in `text`, non-overlapping, in order; an earlier detector wins an overlap."""
    taken: list[Found] = []
    for kind, needed, finder in DETECTORS:
        if needed(text):
            taken = _merged(taken, [Found(kind, start, end) for start, end in finder(text)])
    return taken


def _merged(taken: list[Found], new: list[Found]) -> list[Found]:
    """`taken` (sorted, non-overlapping) with each of `new` (sorted) that overlaps none of it, in
    one pass over both (a search per finding made a row of 100,000 e-mails quadratic)."""
    kept, i = [], 0
    for f in new:
        while i < len(taken) and taken[i].end <= f.start:
            i += 1
        if (i == len(taken) or f.end <= taken[i].start) and (not kept or kept[-1].end <= f.start):
            kept.append(f)
    return sorted(taken + kept, key=lambda f: f.start)  # two sorted runs: Timsort merges them in linear time


def scrub(text: str) -> tuple[str, list[Found]]:
    """`text` with each finding replaced by its placeholder (<EMAIL>, <CARD>, ...), the rest unchanged."""
    found = find_pii(text)
    pieces, at = [], 0
    for f in found:
        pieces += [text[at:f.start], f"<{f.kind}>"]
        at = f.end
    return "".join(pieces) + text[at:], found


def presidio_finder(language: str = "en") -> Callable[[str], list[Found]]:
    """Microsoft Presidio's analyzer (pattern and NER recognizers; names, locations, ...) as a
    second detector, for users who have it and a spaCy model installed; its entity types become
    the kinds (PERSON, LOCATION, ...)."""
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError:
        raise ConfigError("the presidio detector needs presidio-analyzer and a spaCy model: pip install "
                          "presidio-analyzer && python -m spacy download en_core_web_lg (or leave --pii builtin)") from None
    try:
        engine = AnalyzerEngine()
    except Exception as exc:  # spaCy model missing or not loadable: Presidio raises OSError/ValueError
        raise ConfigError(f"Presidio could not start ({exc}); install a spaCy model (python -m spacy download "
                          "en_core_web_lg) or leave --pii builtin") from None
    return lambda text: [Found(r.entity_type, r.start, r.end) for r in engine.analyze(text=text, language=language)]
