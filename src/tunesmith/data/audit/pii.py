"""Personal and secret data: found by pattern, confirmed by checksum where the format has one.

Built in and offline: e-mail addresses, phone numbers, payment card numbers (Luhn), IBANs (ISO
13616 mod-97), IPv4 and IPv6 addresses, US social security numbers (the SSA's ranges), UK national
insurance numbers (HMRC's prefix rules), URLs with a password, API keys by their published prefixes,
private-key blocks, and long high-entropy tokens. A checksum turns most look-alikes away (a
16-digit order number that fails Luhn is not a card). `scrub` puts a typed placeholder in each
place. Regular expressions, not a model: Presidio's pattern recognizers work the same way, and its
NER-based ones need a spaCy model that this machine does not have.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

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


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1


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


_DIGIT = re.compile(r"\d")


def _has(marker: str) -> Callable[[str], bool]:
    return lambda text: marker in text


def _has_digit(text: str) -> bool:
    return _DIGIT.search(text) is not None


def _always(text: str) -> bool:
    return True


# (kind, a cheap test that must pass before the pattern runs, pattern, check): the order is the order of
# precedence where two overlap. Each pattern scan costs about as much as the pre-tests of all of them,
# and most rows hold no '@', '://', '-' or ':'.
DETECTORS: list[tuple[str, Callable[[str], bool], re.Pattern[str], Callable[[str], bool] | None]] = [
    ("PRIVATE_KEY", _has("-----BEGIN"), re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"), None),
    ("URL_CREDENTIALS", _has("://"), re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@[^\s/]+"), None),
    ("API_KEY", _always, re.compile(r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|sk_live_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{36,}"
                           r"|github_pat_[A-Za-z0-9_]{40,}|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}"
                           r"|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z]{30,})"), None),
    ("EMAIL", _has("@"), re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), None),
    ("IBAN", _has_digit, re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), iban_ok),
    ("CARD", _has_digit, re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    ("SSN", _has("-"), re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), _ssn),
    ("NINO", _has_digit, re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), None),
    ("IP", _has("."), re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])"), _ip),
    ("IP", _has(":"), re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}|(?=::))(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])"), _ip),
    ("PHONE", _has_digit, re.compile(r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?\d{3,4}|\d{2,4}[ .-]\d{3,4})"
                         r"[ .-]?\d{3,4}(?![\w-])(?![ .-]?\d)"), lambda text: 9 <= sum(c.isdigit() for c in text) <= 15),
    ("SECRET", _has_digit, re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9_+/=-]{32,}(?![A-Za-z0-9])"), _secret),
]
KINDS = list(dict.fromkeys(kind for kind, _, _, _ in DETECTORS))


def find_pii(text: str) -> list[Found]:
    """Every finding in `text`, non-overlapping, in order; an earlier detector wins an overlap."""
    taken: list[Found] = []
    for kind, needed, pattern, check in DETECTORS:
        if not needed(text):
            continue
        for match in pattern.finditer(text):
            if check is not None and not check(match.group()):
                continue
            if any(match.start() < f.end and f.start < match.end() for f in taken):
                continue
            taken.append(Found(kind, match.start(), match.end()))
    return sorted(taken, key=lambda f: f.start)


def scrub(text: str) -> tuple[str, list[Found]]:
    """`text` with each finding replaced by its placeholder (<EMAIL>, <CARD>, ...)."""
    found = find_pii(text)
    for f in reversed(found):
        text = text[:f.start] + f"<{f.kind}>" + text[f.end:]
    return text, found


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
