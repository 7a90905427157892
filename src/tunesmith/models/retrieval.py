"""Retrieval for the retrieval-augmented (RAG) baselines: a corpus cut into chunks with stable ids,
ranked against each question by BM25 or by dense sentence embeddings.

BM25 needs no weights, so it works offline on any machine; the scoring is rank_bm25's Okapi BM25
(the implementation LangChain's and LlamaIndex's BM25 retrievers use), not a copy of it. Dense
retrieval (`DenseIndex`) embeds with a local encoder, by default the catalog's all-MiniLM-L6-v2,
and finds paraphrases that share few words with the question.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Chunk:
    id: str  # "<source>#<number>": stable while the document's text is unchanged
    source: str  # the document (file name, or file:line of a row) the chunk comes from
    text: str
    key: str | None = None  # a training row's input (chunks of training rows): never retrieved for that same input


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


def load_corpus(spec: str | Path, *, text_field: str = "text", id_field: str = "id", max_words: int = 160,
                overlap: int = 32) -> list[Chunk]:
    """Chunks of a folder of .txt/.md documents, or of the `text_field` of each row of a data file.
    A chunk's source is its file in a folder; in a data file, the row's `id_field` (so that rows can
    name the document they come from, for recall@k), else the row's file:line."""
    from tunesmith.data.read import read_records

    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such corpus; give a folder of .txt/.md files or a .jsonl/.csv file with a "
                        f"'{text_field}' field")
    chunks: list[Chunk] = []
    named_at: dict[str, str] = {}
    for record in read_records(path):
        if record.data is None:
            raise DataError(f"{record.where}: {record.error}")
        text = record.data.get(text_field)
        if not isinstance(text, str):
            raise DataError(f"{record.where}: no text field '{text_field}' (fields: {', '.join(record.data)}); "
                            "name the field that holds each document's text")
        named = record.data.get(id_field)
        source = record.source if path.is_dir() else str(named) if isinstance(named, (str, int)) else record.where
        if source in named_at:
            raise DataError(f"{record.where}: {id_field} '{source}' already names the document at {named_at[source]}; "
                            f"give each document its own {id_field}")
        named_at[source] = record.where
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


class DenseIndex:
    """Chunks ranked by the cosine similarity of sentence embeddings from a local encoder.

    An embedding is the encoder's last hidden states averaged over the attention mask, then L2
    normalized: how sentence-transformers pools all-MiniLM-L6-v2 (its modules.json: Transformer,
    mean Pooling, Normalize), so the vectors are the ones the model was trained to compare.
    Texts longer than the encoder reads (sentence_bert_config.json's max_seq_length) are cut.
    """

    def __init__(self, chunks: list[Chunk], encoder: str = "all-minilm-l6-v2", *, batch_size: int = 32,
                 device: str = "auto") -> None:
        import torch
        from transformers import AutoModel

        from tunesmith.models.device import resolve_device
        from tunesmith.models.load import load_error, load_tokenizer, resolve_model

        if not chunks:
            raise DataError("a retrieval corpus needs at least one chunk of text")
        if batch_size < 1:
            raise ConfigError(f"dense retrieval batch size {batch_size}: need at least 1")
        source = resolve_model(encoder)
        self.chunks, self.encoder, self.batch_size = chunks, encoder, batch_size
        self.tokenizer = load_tokenizer(source)
        self.tokenizer.padding_side = "right"  # BERT's absolute positions: a text keeps the positions it has alone
        try:
            self.model = AutoModel.from_pretrained(source.location, dtype=torch.float32)
        except Exception as exc:
            raise load_error(encoder, exc) from exc
        self.model.to(resolve_device(device)).eval()
        self.max_length = _encoder_max_length(Path(source.location), self.tokenizer, self.model.config)
        self.embeddings = self.embed([chunk.text for chunk in chunks])

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-length embeddings of `texts` (one row each, float32 on the CPU), `batch_size` at a time."""
        import torch

        vectors = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.model.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.append(torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu())
        return torch.cat(vectors)

    def search(self, query: str, k: int) -> list[tuple[Chunk, float]]:
        """The `k` most similar chunks with their cosine similarities, best first; ties keep corpus order."""
        scores = (self.embeddings @ self.embed([query])[0]).tolist()
        order = sorted(range(len(self.chunks)), key=lambda i: (-scores[i], i))[:k]
        return [(self.chunks[i], scores[i]) for i in order]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"dense\0{self.encoder}\0".encode())
        for chunk in self.chunks:
            digest.update(f"{chunk.id}\0{chunk.text}\0".encode())
        return digest.hexdigest()[:16]


def _encoder_max_length(folder: Path, tokenizer: Any, config: Any) -> int:
    """Tokens the encoder reads: sentence-transformers' max_seq_length where the folder has it, else
    the tokenizer's limit, never past the model's position embeddings."""
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    settings = folder / "sentence_bert_config.json"
    if settings.is_file():
        limits.append(json.loads(settings.read_text()).get("max_seq_length"))
    return min(limit for limit in limits if isinstance(limit, int) and limit > 0)


def index_corpus(corpus: str, *, text_field: str = "text", retriever: str = "bm25") -> BM25Index | DenseIndex:
    """The index of a document corpus (a folder, a data file or a named document set such as
    invented-facts:documents), searched by BM25 or by the catalog's MiniLM (`retriever="dense"`)."""
    from tunesmith.data.catalog import resolve_data_path

    return index_chunks(load_corpus(resolve_data_path(corpus), text_field=text_field), retriever)


def index_chunks(chunks: list[Chunk], retriever: str = "bm25") -> BM25Index | DenseIndex:
    """`chunks` searched by BM25 or by the catalog's MiniLM (`retriever="dense"`)."""
    if retriever not in ("bm25", "dense"):
        raise ConfigError(f"retriever={retriever!r}: use bm25 or dense")
    return DenseIndex(chunks) if retriever == "dense" else BM25Index(chunks)


def recall_at_k(retrieved: list[list[str]], relevant: list[str | None]) -> float | None:
    """Share of rows whose named source is among their retrieved chunks' sources (rows naming none are left out)."""
    pairs = [(sources, wanted) for sources, wanted in zip(retrieved, relevant) if wanted]
    if not pairs:
        return None
    return sum(wanted in sources for sources, wanted in pairs) / len(pairs)
