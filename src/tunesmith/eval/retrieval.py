"""Retrieval for the retrieval-augmented (RAG) baselines: a corpus cut into chunks with stable ids,
ranked against each question by BM25.

BM25 needs no weights, so it works offline on any machine; the scoring is rank_bm25's Okapi BM25
(the implementation LangChain's and LlamaIndex's BM25 retrievers use), not a copy of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import ConfigError, DataError

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Chunk:
    id: str  # "<source>#<number>": stable while the document's text is unchanged
    source: str  # the document (file name, or file:line of a row) the chunk comes from
    text: str


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def chunk_document(source: str, text: str, *, max_words: int = 160, overlap: int = 32) -> list[Chunk]:
    """Windows of at most `max_words` words that overlap by `overlap`, each with a stable id."""
    if max_words < 1 or not 0 <= overlap < max_words:
        raise ConfigError(f"chunks of {max_words} words overlapping by {overlap}: need 0 <= overlap < max_words")
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if not spans:
        return []
    chunks = []
    step = max_words - overlap
    for number, start in enumerate(range(0, max(len(spans) - overlap, 1), step)):
        piece = spans[start:start + max_words]
        chunks.append(Chunk(f"{source}#{number}", source, text[piece[0][0]:piece[-1][1]]))
    return chunks


def load_corpus(spec: str | Path, *, text_field: str = "text", max_words: int = 160, overlap: int = 32) -> list[Chunk]:
    """Chunks of a folder of .txt/.md documents, or of the `text_field` of each row of a data file."""
    from tunesmith.data.read import read_records

    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such corpus; give a folder of .txt/.md files or a .jsonl/.csv file with a "
                        f"'{text_field}' field")
    chunks: list[Chunk] = []
    for record in read_records(path):
        if record.data is None:
            raise DataError(f"{record.where}: {record.error}")
        text = record.data.get(text_field)
        if not isinstance(text, str):
            raise DataError(f"{record.where}: no text field '{text_field}' (fields: {', '.join(record.data)}); "
                            "name the field that holds each document's text")
        source = record.source if path.is_dir() else record.where
        chunks.extend(chunk_document(source, text, max_words=max_words, overlap=overlap))
    if not chunks:
        raise DataError(f"{spec}: the corpus has no text")
    return chunks


class BM25Index:
    """Chunks ranked by Okapi BM25 (k1 1.5, b 0.75, rank_bm25's defaults) against a query."""

    def __init__(self, chunks: list[Chunk]) -> None:
        try:
            from rank_bm25 import BM25Okapi
        except ImportError:  # pragma: no cover - a core dependency; only a broken install lacks it
            raise ConfigError("retrieval needs the rank-bm25 package: pip install rank-bm25") from None
        if not chunks:
            raise DataError("a retrieval corpus needs at least one chunk of text")
        self.chunks = chunks
        self._bm25 = BM25Okapi([words(chunk.text) or [""] for chunk in chunks])

    def search(self, query: str, k: int) -> list[tuple[Chunk, float]]:
        """The `k` best chunks with their scores, best first; ties keep corpus order (stable)."""
        scores = self._bm25.get_scores(words(query))
        order = sorted(range(len(self.chunks)), key=lambda i: (-scores[i], i))[:k]
        return [(self.chunks[i], float(scores[i])) for i in order]

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks:
            digest.update(f"{chunk.id}\0{chunk.text}\0".encode())
        return digest.hexdigest()[:16]


def recall_at_k(retrieved: list[list[str]], relevant: list[str | None]) -> float | None:
    """Share of rows whose named source is among their retrieved chunks' sources (rows naming none are left out)."""
    pairs = [(sources, wanted) for sources, wanted in zip(retrieved, relevant) if wanted]
    if not pairs:
        return None
    return sum(wanted in sources for sources, wanted in pairs) / len(pairs)
