"""Checks of the data set as a whole that are not duplicates or personal data: labels, suspicious
rows, preference pairs."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.audit.rows import AuditRow
from tunesmith.data.text import normalize

_MOJIBAKE = re.compile(r"Ã[\x80-\xbf¡-¿]|â€[™œ\x9d“”˜¦]|Â[ -¿]")


@dataclass(frozen=True)
class Finding:
    check: str  # e.g. "empty", "encoding", "length-outlier"
    where: str  # file:line
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


def words_by_label(rows: list[AuditRow]) -> dict[str, list[int]]:
    """The words of each labelled row's input, by label (for the mean and the report's histogram)."""
    lengths: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.label is not None:
            lengths[row.label].append(len(row.input.split()))
    return dict(lengths)


def label_summary(rows: list[AuditRow]) -> dict | None:
    """Counts, imbalance, mean length per class and labels seen once; None without labels."""
    labels = [row.label for row in rows if row.label is not None]
    if not labels:
        return None
    counts = Counter(labels)
    lengths = words_by_label(rows)
    ratio = max(counts.values()) / min(counts.values())
    return {"counts": dict(counts.most_common()), "imbalance_ratio": ratio,
            "suggest_class_weights": ratio >= 3.0,  # task.class_weights=balanced pays off from about 3:1
            "mean_words": {label: statistics.fmean(values) for label, values in lengths.items()},
            "singletons": sorted(label for label, count in counts.items() if count == 1)}


def suspicious_rows(rows: list[AuditRow]) -> list[Finding]:
    findings = []
    lengths = [len(row.text) for row in rows]
    median = statistics.median(lengths) if lengths else 0
    spread = statistics.median(abs(n - median) for n in lengths) if lengths else 0  # MAD: robust to the outliers
    for row, length in zip(rows, lengths):
        if not row.input.strip() or (row.answer == "" and row.label is None and row.rejected is None and not row.input):
            findings.append(Finding("empty", row.where, "the row's input is empty or only whitespace",
                                    "fill it in or remove the row"))
        if "\ufffd" in row.everything or _MOJIBAKE.search(row.everything):
            findings.append(Finding("encoding", row.where, "encoding damage (U+FFFD or mojibake such as 'Ã©')",
                                    "re-export the file as UTF-8 from its source"))
        delimiter = {".csv": ",", ".tsv": "\t"}.get(Path(row.where.rsplit(":", 1)[0]).suffix.lower())
        if delimiter and sum(delimiter in line for line in row.text.splitlines()) >= 5:
            findings.append(Finding("swallowed-rows", row.where, "one field holds many lines with delimiters and quotes, "
                                    "the usual sign of an unclosed quote in a CSV", "close the quote on or before this line"))
        if spread and length > median + 10 * spread and length > 4 * median:
            findings.append(Finding("length-outlier", row.where, f"{length} characters, against a median of {median:.0f}",
                                    "check that the row is what it should be"))
        if row.answer and len(row.answer) > 20 and normalize(row.answer) in normalize(row.input):
            findings.append(Finding("repeats-prompt", row.where, "the answer repeats text of the prompt",
                                    "check the reply column"))
    return findings


# A few hundred frequent words decide a Latin-script language well enough to spot the odd row out;
# a library (langdetect, fastText's lid.176) would add weights or a dependency for the same flag.
_STOPWORDS = {
    "en": {"the", "and", "is", "of", "to", "in", "it", "that", "was", "for", "with", "this", "you", "are", "not"},
    "de": {"der", "die", "und", "ist", "nicht", "das", "ein", "eine", "zu", "mit", "ich", "sie", "es", "auf", "den"},
    "fr": {"le", "la", "les", "et", "est", "une", "un", "des", "du", "que", "pas", "pour", "dans", "ce", "il"},
    "es": {"el", "la", "los", "las", "y", "es", "una", "un", "que", "no", "por", "para", "con", "del", "se"},
    "nl": {"de", "het", "een", "en", "is", "niet", "van", "dat", "ik", "je", "op", "te", "zijn", "met", "voor"},
    "it": {"il", "la", "e", "che", "non", "di", "un", "una", "per", "con", "sono", "del", "gli", "le", "lo"},
}
_SCRIPTS = [("Cyrillic", 0x0400, 0x04FF), ("Greek", 0x0370, 0x03FF), ("Arabic", 0x0600, 0x06FF),
            ("Hebrew", 0x0590, 0x05FF), ("Devanagari", 0x0900, 0x097F), ("CJK", 0x3040, 0x9FFF), ("Hangul", 0xAC00, 0xD7AF)]


_LETTER = re.compile(r"[^\W\d_]")
_SCRIPT_PATTERNS = {name: re.compile(f"[{chr(low)}-{chr(high)}]") for name, low, high in _SCRIPTS}
_LATIN_WORD = re.compile(r"[a-zà-ÿ]+")
_LANGUAGES_OF: dict[str, list[str]] = {}
for _language, _words in _STOPWORDS.items():
    for _word in _words:
        _LANGUAGES_OF.setdefault(_word, []).append(_language)


def language_of(text: str) -> str | None:
    """The row's script, or for Latin script its language by frequent words; None when unsure.
    Regular expressions and one pass over the first 200 words: 100,000 rows in a few seconds."""
    text = text[:2000]
    letters = len(_LETTER.findall(text))
    if letters < 20:
        return None
    if not text.isascii():
        for name, pattern in _SCRIPT_PATTERNS.items():
            if len(pattern.findall(text)) > letters / 2:
                return name
    scores = dict.fromkeys(_STOPWORDS, 0)
    for word in _LATIN_WORD.findall(text.lower())[:200]:
        for language in _LANGUAGES_OF.get(word, ()):
            scores[language] += 1
    ranked = sorted(scores.values())
    best = max(scores, key=scores.get)
    return best if scores[best] >= 2 and scores[best] >= 2 * ranked[-2] else None


def language_outliers(rows: list[AuditRow]) -> list[Finding]:
    """Rows in another language than most rows (when most rows have one)."""
    languages = [language_of(row.input + " " + row.answer) for row in rows]
    known = Counter(language for language in languages if language)
    if not known:
        return []
    majority, count = known.most_common(1)[0]
    if count < 0.6 * len(rows):
        return []
    return [Finding("language", row.where, f"reads as {language}, while {count} of {len(rows)} rows read as {majority}",
                    "check that the row belongs in this data set") for row, language in zip(rows, languages)
            if language and language != majority]


def preference_findings(rows: list[AuditRow]) -> tuple[list[Finding], float | None]:
    """chosen == rejected, contradicting pairs for one prompt, and the share where chosen is longer."""
    pairs = [row for row in rows if row.rejected is not None]
    if not pairs:
        return [], None
    findings = []
    seen: dict[tuple[str, str, str], str] = {}
    for row in pairs:
        prompt, chosen, rejected = normalize(row.input), normalize(row.answer), normalize(row.rejected or "")
        if chosen == rejected:
            findings.append(Finding("same-pair", row.where, "chosen and rejected are the same reply",
                                    "remove the row: it teaches nothing"))
        if (prompt, rejected, chosen) in seen:
            findings.append(Finding("contradicting-pair", row.where,
                                    f"the same prompt and replies are ranked the other way at {seen[(prompt, rejected, chosen)]}",
                                    "keep one of the two"))
        seen.setdefault((prompt, chosen, rejected), row.where)
    longer = sum(len(row.answer) > len(row.rejected or "") for row in pairs) / len(pairs)
    return findings, longer
