"""Precision and recall of the personal-data detectors per kind, on the labelled set of
pii_samples.py (225+ planted values, 200+ look-alikes), and the cases issue 31 named.

    python -m pytest -n 0 -s tests/unit/data/audit/test_pii_labelled.py   # prints the table
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.unit.data.audit.pii_samples import MEASURED, labelled_set, measure, table
from tunesmith.data.audit.clean import write_cleaned
from tunesmith.data.audit.pii import card_issuer, find_pii, luhn_ok, scrub

PRECISION_FLOOR = 0.98
RECALL_FLOOR = 0.95


def test_precision_and_recall_per_kind_on_the_labelled_set():
    samples = labelled_set()
    assert sum(s.kind is not None for s in samples) >= 200 and sum(s.kind is None for s in samples) >= 200
    scores, others, notes = measure(find_pii, samples)
    print("\n" + table(scores, others))
    for kind in MEASURED:
        assert scores[kind].planted >= 40, kind
        assert scores[kind].precision >= PRECISION_FLOOR and scores[kind].recall >= RECALL_FLOOR, (
            kind, "\n".join(note for note in notes if f" {kind} " in note))
    assert not others, others  # no other detector fires on these rows either


@pytest.mark.parametrize("text, found", [
    ("call +33 1 23 45 67 89 now", "+33 1 23 45 67 89"), ("call +91 98765 43210 now", "+91 98765 43210"),
    ("call 07700 900123 now", "07700 900123"), ("ping 10.0.0.1.", "10.0.0.1"),
    ("call +1 415-555-0132", "+1 415-555-0132"), ("or (020) 7946 0958", "(020) 7946 0958"),
    ("Mastercard's 2-series: 2223 0031 2200 3222", "2223 0031 2200 3222"),
    ("1. 415-555-0132", "415-555-0132"),  # a list's number is not part of the phone number
])
def test_each_is_found_with_its_exact_span(text: str, found: str):
    assert [text[f.start:f.end] for f in find_pii(text)] == [found]


@pytest.mark.parametrize("text", [
    "in 1999 2000 2001", "order 2023 1234 5678", "EIN 12-3456789", "version 1.2.3.4.5 and 999.1.1.1",
    "id 7992 7398 7130 0008",  # passes Luhn, but no card network issues numbers beginning 79
    "38 5 38 24 45 9 45 99",  # passes Luhn and begins like a Diners Club card, but is a list of numbers
    "ISBN 5-315-94524-3", "ref ORD-2023-304013",  # valid US numbers in a grouping no one dials
    "4155550132",  # one run of digits without a +: an id as often as a phone number
])
def test_look_alikes_the_regular_expressions_flagged_are_left_alone(text: str):
    assert find_pii(text) == []


def test_card_ranges_against_the_networks_published_test_numbers():
    """Stripe's and PayPal's test card numbers, one or two per network, each Luhn-valid."""
    numbers = {"Visa": ["4242424242424242", "4000056655665556"], "Mastercard": ["5555555555554444", "2223003122003222"],
               "American Express": ["378282246310005", "371449635398431"], "Discover": ["6011111111111117"],
               "Diners Club": ["3056930009020004", "36227206271667"], "JCB": ["3566002020360505"],
               "UnionPay": ["6200000000000005"], "Maestro": ["6304000000000000", "5018000000000009"]}
    for issuer, cards in numbers.items():
        for number in cards:
            assert luhn_ok(number) and card_issuer(number) == issuer, number
    assert card_issuer("4242424242424") is None  # Visa's retired 13-digit numbers: EAN-13 barcodes look the same
    assert card_issuer("2720999999999999") == "Mastercard" and card_issuer("2721000000000000") is None


def test_scrub_replaces_exactly_what_is_found_and_nothing_else(tmp_path: Path):
    samples = labelled_set(seed=5)
    for sample in samples:
        text, found = scrub(sample.text)
        assert found == find_pii(sample.text)
        if sample.kind is None:
            assert text == sample.text  # a look-alike comes out as it went in
        rebuilt, at = "", 0
        for f in found:
            rebuilt += sample.text[at:f.start] + f"<{f.kind}>"
            at = f.end
        assert text == rebuilt + sample.text[at:] and find_pii(text) == []

    rows = [{"messages": [{"role": "system", "content": "Reach the desk at +44 20 7946 0958."},
                          {"role": "user", "content": s.text}, {"role": "assistant", "content": "noted"}]} for s in samples]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    removed, replaced = write_cleaned(source, tmp_path / "clean.jsonl", scrub_pii=True)
    cleaned = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert removed == 0 and len(cleaned) == len(rows)
    for sample, row in zip(samples, cleaned):
        assert row["messages"][0]["content"] == "Reach the desk at <PHONE>."
        assert row["messages"][1]["content"] == scrub(sample.text)[0]
    assert replaced == Counter(f.kind for s in samples for f in find_pii(s.text)) + Counter(PHONE=len(rows))
