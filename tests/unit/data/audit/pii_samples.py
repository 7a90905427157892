"""A labelled set for the personal-data detectors, generated in code (seeded, so every run sees the
same rows): phone numbers of several countries in several formats, card numbers of each issuer,
IPv4 and IPv6 addresses and e-mail addresses, each inside a short sentence, and look-alikes that
are none of these (years, dates, ISBNs, barcodes, order numbers, versions, EINs, timestamps,
Luhn-valid ids outside the card issuers' ranges, ...).

    python -m tests.unit.data.audit.pii_samples   # the precision and recall table of find_pii
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers

MEASURED = ("PHONE", "CARD", "IP", "EMAIL")


@dataclass(frozen=True)
class Sample:
    text: str
    kind: str | None  # None for a look-alike
    start: int = 0  # the planted value's place in `text`
    end: int = 0
    what: str = ""  # the generator, for the report of misses


def _planted(template: str, value: str, kind: str | None, what: str) -> Sample:
    start = template.index("{}")
    return Sample(template.replace("{}", value, 1), kind, start, start + len(value), what)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def luhn_digit(body: str) -> str:
    """The check digit that makes `body` + digit pass Luhn."""
    total = 0
    for n, char in enumerate(reversed(body)):
        d = int(char)
        if n % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def _grouped(digits: str, sizes: list[int], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(digits[at:at + size])
        at += size
    return sep.join(part for part in parts + [digits[at:]] if part)


# ---- phone numbers ----------------------------------------------------------------------------

US_AREAS = ["212", "213", "202", "303", "305", "312", "404", "415", "503", "512", "602", "617", "646", "702",
            "713", "718", "801", "206", "971", "919"]
PHONE_CONTEXTS = ["Call me on {} tonight.", "tel: {}", "Phone {} (mobile)", "You can reach Ann at {} after 6pm.",
                  "{}", "contact: {}, thanks", "Her number is {}.", "Fax {} / office"]


def _us_number(rng: random.Random) -> tuple[str, str, str]:
    while True:
        area, exchange, line = rng.choice(US_AREAS), str(rng.randint(200, 999)), _digits(rng, 4)
        if exchange[1:] != "11" and phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area}{exchange}{line}")):
            return area, exchange, line


def _us_phones(rng: random.Random) -> list[tuple[str, str]]:
    formats = ["({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "{a} {e} {l}", "1-{a}-{e}-{l}", "+1 {a} {e} {l}",
               "+1 ({a}) {e}-{l}", "+1{a}{e}{l}", "+1-{a}-{e}-{l}", "({a}){e}-{l}"]
    out = []
    for n in range(20):
        area, exchange, line = _us_number(rng)
        out.append((formats[n % len(formats)].format(a=area, e=exchange, l=line), "US"))
    return out


def _uk_phones(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for n in range(6):  # mobiles
        mobile = f"7{rng.choice('4589')}{_digits(rng, 2)}"
        rest = _digits(rng, 6)
        out.append(([f"0{mobile} {rest}", f"+44 {mobile} {rest}", f"+44 (0){mobile} {rest}"][n % 3], "UK mobile"))
    for n in range(6):  # London
        number = f"{rng.choice('378')}{_digits(rng, 3)} {_digits(rng, 4)}"
        out.append(([f"020 {number}", f"(020) {number}", f"+44 20 {number}"][n % 3], "UK London"))
    for _ in range(3):
        out.append((f"0161 {rng.randint(200, 999)} {_digits(rng, 4)}", "UK Manchester"))
    for n in range(5):  # Ofcom's ranges for drama (fiction)
        out.append(([f"07700 900{_digits(rng, 3)}", f"020 7946 0{_digits(rng, 3)}", f"0161 496 0{_digits(rng, 3)}",
                     f"+44 7700 900{_digits(rng, 3)}", f"0113 496 0{_digits(rng, 3)}"][n], "UK drama"))
    return out


INTERNATIONAL_REGIONS = ["FR", "DE", "IN", "AU", "JP", "BR", "ES", "IT", "NL", "CN", "MX", "ZA", "SG", "SE", "CH", "IE",
                         "CA", "PL"]


def _international_phones(rng: random.Random) -> list[tuple[str, str]]:
    """Numbers of other countries written with their country code, as the country groups them, in
    E.164 (no spaces) and with dashes."""
    types = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
    out = []
    for n, region in enumerate(INTERNATIONAL_REGIONS * 2):
        example = phonenumbers.example_number_for_type(region, types[n % 2])
        national = str(example.national_number)
        for _ in range(50):  # vary the last four digits, keeping a valid number
            number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{_digits(rng, 4)}")
            if phonenumbers.is_valid_number(number):
                break
        else:
            number = example
        spaced = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        written = [spaced, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                   spaced.replace(" ", "-", 1)][n % 3]
        out.append((written, f"{region} international"))
    out += [("+33 1 23 45 67 89", "FR international"), ("+91 98765 43210", "IN international"),
            ("07700 900123", "UK drama")]
    return out


# as people write them, not as libphonenumber formats them
HAND_WRITTEN_PHONES = ["415 555 0132", "(415)555-0132", "+1.415.555.0132", "1 (415) 555-0132", "+44 7911 123 456",
                       "07911 123 456", "020 79460958", "+33 (0)1 23 45 67 89", "+33 1 2345 6789", "+91 987 654 3210",
                       "+91-9876543210", "+61 (0)2 9876 5432", "+81-3-1234-5678", "(+44) 20 7946 0958",
                       "+44 207 946 0958", "0207 946 0958", "+49 (0) 30 1234567", "1-800-555-0199",
                       "+31 (0)20 123 4567", "+7 (495) 123-45-67", "+55 (11) 91234-5678", "+14155550132"]


def phone_samples(rng: random.Random) -> list[Sample]:
    numbers = _us_phones(rng) + _uk_phones(rng) + _international_phones(rng)
    numbers += [(number, "hand-written") for number in HAND_WRITTEN_PHONES]
    samples = [_planted(rng.choice(PHONE_CONTEXTS), number, "PHONE", f"phone {what}") for number, what in numbers]
    return samples + [_planted("call {} ext. 12", "+1 (800) 555-0199", "PHONE", "phone with extension")]


# ---- payment cards ----------------------------------------------------------------------------

# issuer -> (prefixes, lengths): the issuers' published IIN ranges (as tabled in Wikipedia's
# "Payment card number"), written out here independently of the code under test
CARD_ISSUERS = {
    "Visa": (["4"], [16, 19]),
    "Mastercard": (["51", "52", "53", "54", "55", "2221", "2400", "2720"], [16]),
    "Amex": (["34", "37"], [15]),
    "Discover": (["6011", "644", "649", "65", "622126", "622925"], [16, 19]),
    "JCB": (["3528", "3550", "3589"], [16, 19]),
    "Diners": (["36", "300", "305", "38"], [14, 16]),
    "UnionPay": (["62", "81"], [16, 19]),
    "Maestro": (["5018", "5020", "5038", "6304", "6759", "6761", "6763"], [13, 16, 19]),
}
CARD_CONTEXTS = ["card {} exp 09/27", "Pay with {}.", "my card number is {}", "{}", "(card: {})", "charged to {} today"]


def card_number(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    return body + luhn_digit(body)


def _card_written(rng: random.Random, digits: str, n: int) -> str:
    if len(digits) == 15:
        sizes = [4, 6]
    elif len(digits) == 14:
        sizes = [4, 6]
    else:
        sizes = [4, 4, 4, 4]
    return [_grouped(digits, sizes, " "), _grouped(digits, sizes, "-"), digits][n % 3]


def card_samples(rng: random.Random) -> list[Sample]:
    out = []
    for issuer, (prefixes, lengths) in CARD_ISSUERS.items():
        for n in range(8):
            digits = card_number(rng, prefixes[n % len(prefixes)], lengths[n % len(lengths)])
            out.append(_planted(rng.choice(CARD_CONTEXTS), _card_written(rng, digits, n), "CARD", f"card {issuer}"))
    return out


# ---- IP and e-mail addresses ------------------------------------------------------------------

IP_CONTEXTS = ["ping {}.", "from {} at noon", "({})", "IP: {}", "the server at {} is down", "blocked {}, again",
               "host={}", "Connect to {}."]


def ip_samples(rng: random.Random) -> list[Sample]:
    out = []
    for n in range(28):
        first = [10, 172, 192, 8, 51, 203, 100, 185][n % 8]
        address = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        out.append(_planted(IP_CONTEXTS[n % len(IP_CONTEXTS)], address, "IP", "ipv4"))
    for n in range(14):
        groups = [f"{rng.randrange(16 ** 4):x}" for _ in range(8)]
        full = ":".join(["2001", "db8"] + groups[2:])
        compressed = f"2001:db8::{groups[6]}:{groups[7]}" if n % 3 == 1 else f"fe80::{groups[5]}:{groups[6]}:{groups[7]}"
        out.append(_planted(IP_CONTEXTS[n % len(IP_CONTEXTS)], full if n % 3 == 0 else compressed, "IP", "ipv6"))
    return out


EMAIL_CONTEXTS = ["mail {} today", "<{}>", "({})", "mailto:{}", "Write to {}.", "Email: {}", "cc {}, bcc nobody",
                  "from: {}"]


def email_samples(rng: random.Random) -> list[Sample]:
    names = ["ann.lee", "j.doe+news", "bob_smith42", "x", "first.last", "support", "m-rossi", "zoe.oneil"]
    domains = ["example.com", "mail.example.co.uk", "uni-heidelberg.de", "company.io", "sub.domain.org", "example.fr"]
    out = []
    for n in range(40):
        address = f"{rng.choice(names)}{rng.choice(['', str(rng.randint(1, 99))])}@{rng.choice(domains)}"
        out.append(_planted(EMAIL_CONTEXTS[n % len(EMAIL_CONTEXTS)], address, "EMAIL", "email"))
    return out


# ---- look-alikes ------------------------------------------------------------------------------

def _isbn13(rng: random.Random) -> str:
    body = "978" + _digits(rng, 9)
    check = -sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10
    digits = body + str(check)
    return f"{digits[:3]}-{digits[3]}-{digits[4:8]}-{digits[8:12]}-{digits[12]}"


def _isbn10(rng: random.Random) -> str:
    body = _digits(rng, 9)
    check = -sum(int(d) * (10 - i) for i, d in enumerate(body)) % 11
    return f"{body[0]}-{body[1:4]}-{body[4:9]}-{'X' if check == 10 else check}"


def _ean13(rng: random.Random) -> str:
    body = rng.choice(["400", "401", "412", "440", "501", "30", "0", "76", "87", "49", "80"])
    body += _digits(rng, 12 - len(body))
    return body + str(-sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10)


def _luhn_id_outside_issuers(rng: random.Random, length: int) -> str:
    """A Luhn-valid number whose first digits belong to no card issuer (1, 7, 9, 0, or 8 but not 81)."""
    first = rng.choice(["1", "7", "9", "0", "80", "88"])
    return card_number(rng, first, length)


def _year(rng: random.Random) -> int:
    return rng.randint(1950, 2030)


LOOK_ALIKES: list[tuple[str, Callable[[random.Random], str]]] = [
    ("years", lambda r: f"in {_year(r)} {_year(r)} {_year(r)}"),
    ("years", lambda r: f"from {_year(r)}, {_year(r)} and {_year(r)} to {_year(r)}"),
    ("year range", lambda r: f"the war of {_year(r)}-{_year(r)} ended"),
    ("date", lambda r: f"on {_year(r)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"),
    ("date", lambda r: f"due {r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{_year(r)}."),
    ("date", lambda r: f"am {r.randint(1, 28):02d}.{r.randint(1, 12):02d}.{_year(r)} geliefert"),
    ("timestamp", lambda r: f"at {_year(r)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} {r.randint(0, 23):02d}:"
                            f"{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"),
    ("unix time", lambda r: f"ts={r.randint(1_000_000_000, 1_799_999_999)}"),
    ("unix time ms", lambda r: f"created {r.randint(1_000_000_000_000, 1_799_999_999_999)}"),
    ("ISBN-13", lambda r: f"ISBN {_isbn13(r)}"),
    ("ISBN-10", lambda r: f"ISBN {_isbn10(r)}"),
    ("EAN-13", lambda r: f"barcode {_ean13(r)}"),
    ("order id", lambda r: f"order {_year(r)} {_digits(r, 4)} {_digits(r, 4)}"),
    ("order id", lambda r: f"order #{_digits(r, 8)} shipped"),
    ("order id", lambda r: f"ref ORD-{_year(r)}-{_digits(r, 6)}"),
    ("invoice", lambda r: f"invoice {_year(r)}/{_digits(r, 6)}"),
    ("version", lambda r: f"v{r.randint(0, 20)}.{r.randint(0, 40)}.{r.randint(0, 200)}"),
    ("build", lambda r: f"Windows 10.0.{r.randint(10240, 22631)}.{r.randint(1000, 4000)}"),
    ("version", lambda r: f"version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}"),
    ("EIN", lambda r: f"EIN {_digits(r, 2)}-{_digits(r, 7)}"),
    ("Luhn id", lambda r: f"id {_grouped(_luhn_id_outside_issuers(r, 16), [4, 4, 4], ' ')}"),
    ("Luhn id", lambda r: f"account {_luhn_id_outside_issuers(r, r.choice([13, 14, 15, 16, 18]))}"),
    ("coordinates", lambda r: f"at {r.uniform(-80, 80):.4f}, {r.uniform(-170, 170):.4f}"),
    ("time range", lambda r: f"open {r.randint(6, 11)}:{r.choice(['00', '30'])}-{r.randint(12, 20)}:{r.choice(['00', '30'])}"),
    ("score", lambda r: f"won {r.randint(10, 40)}-{r.randint(10, 40)}, {r.randint(10, 40)}-{r.randint(10, 40)}"),
    ("amount", lambda r: f"${r.randint(1, 999)},{_digits(r, 3)},{_digits(r, 3)}.{_digits(r, 2)}"),
    ("amount", lambda r: f"{r.randint(1, 99)} {_digits(r, 3)} {_digits(r, 3)} people"),
    ("ZIP+4", lambda r: f"CA {r.randint(90001, 96162)}-{_digits(r, 4)}"),
    ("sequence", lambda r: " ".join(str(r.randint(1, 99)) for _ in range(8))),
    ("pages", lambda r: f"VLDB J. {r.randint(1, 30)}({r.randint(1, 4)}): {r.randint(100, 300)}-{r.randint(301, 400)} ({_year(r)})"),
    ("bad IP", lambda r: f"{r.randint(256, 999)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(0, 255)}"),
    ("handle", lambda r: f"thanks @{r.choice(['jane_doe', 'bob', 'dev-team'])}{r.randint(1, 99)}!"),
    ("no TLD", lambda r: f"login as admin@{r.choice(['localhost', 'server', 'db01'])}"),
    ("SSN never issued", lambda r: f"{r.choice(['000', '666', '900'])}-{_digits(r, 2)}-{_digits(r, 4)}"),
    ("tracking", lambda r: f"USPS {_grouped('9400' + _digits(r, 18), [4, 4, 4, 4, 4], ' ')}"),
    ("part number", lambda r: f"part {_digits(r, 3)}-{_digits(r, 4)}-{_digits(r, 2)}"),
]


def look_alike_samples(rng: random.Random, per_generator: int = 6) -> list[Sample]:
    return [Sample(make(rng), None, what=what) for what, make in LOOK_ALIKES for _ in range(per_generator)]


def labelled_set(seed: int = 31) -> list[Sample]:
    rng = random.Random(seed)
    return phone_samples(rng) + card_samples(rng) + ip_samples(rng) + email_samples(rng) + look_alike_samples(rng)


@dataclass
class Score:
    found: int = 0  # planted values found with their kind and exact place
    false: int = 0  # findings of the kind anywhere else (a look-alike, another kind, a wrong span)
    planted: int = 0

    @property
    def precision(self) -> float:
        return self.found / (self.found + self.false) if self.found + self.false else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else 1.0


def measure(find: Callable[[str], list], samples: list[Sample]) -> tuple[dict[str, Score], Counter, list[str]]:
    """Per measured kind: found, false and planted; findings of other kinds on the samples; and
    one line per miss or false finding."""
    scores = {kind: Score() for kind in MEASURED}
    others: Counter = Counter()
    notes = []
    for sample in samples:
        if sample.kind in scores:
            scores[sample.kind].planted += 1
        hit = False
        for f in find(sample.text):
            exact = f.kind == sample.kind and (f.start, f.end) == (sample.start, sample.end)
            hit = hit or exact
            if f.kind not in scores:
                others[f.kind] += 1
            elif exact:
                scores[f.kind].found += 1
            else:
                scores[f.kind].false += 1
                notes.append(f"false {f.kind} {sample.text[f.start:f.end]!r} in {sample.text!r} ({sample.what or 'look-alike'})")
        if sample.kind in scores and not hit:
            notes.append(f"missed {sample.kind} {sample.text[sample.start:sample.end]!r} in {sample.text!r} ({sample.what})")
    return scores, others, notes


def table(scores: dict[str, Score], others: Counter) -> str:
    lines = [f"{'kind':8}{'planted':>9}{'found':>7}{'false':>7}{'precision':>11}{'recall':>8}"]
    lines += [f"{kind:8}{s.planted:>9}{s.found:>7}{s.false:>7}{s.precision:>11.3f}{s.recall:>8.3f}" for kind, s in scores.items()]
    if others:
        lines.append("other kinds found: " + ", ".join(f"{kind} {n}" for kind, n in others.most_common()))
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from tunesmith.data.audit.pii import find_pii

    samples = labelled_set()
    scores, others, notes = measure(find_pii, samples)
    print(f"{sum(s.kind is not None for s in samples)} planted values, {sum(s.kind is None for s in samples)} look-alikes")
    print(table(scores, others))
    if "-v" in sys.argv:
        print("\n".join(notes))
