"""Retrieval-augmented prompts for the RAG baselines: the k chunks most relevant to a row's input,
placed before its question, on the same rows and with the same decoding as every other system.

The corpus is a folder of documents, a .jsonl/.csv file with a text field, or `train`: the training
rows themselves, each "input -> answer" (the k nearest solved rows as context). A training row whose
input equals the evaluated row's input is never retrieved for it (as with few-shot examples); a
document that contains the answer is fine: finding it is what retrieval is for.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.config import RagConfig
from tunesmith.data.examples import Message
from tunesmith.data.prompting import with_documents
from tunesmith.data.text import normalize
from tunesmith.errors import ConfigError
from tunesmith.eval.items import EvalItem
from tunesmith.models.retrieval import BM25Index, Chunk, DenseIndex, index_chunks, index_corpus

Index = BM25Index | DenseIndex


@dataclass(frozen=True)
class Retrieved:
    prompts: list[tuple[Message, ...]]
    chunk_ids: list[list[str]]  # per row, best first
    sources: list[list[str]]


def build_index(settings: RagConfig, pool: list[EvalItem]) -> tuple[Index, dict[str, str]]:
    """The retriever over `settings.corpus` (BM25, or dense embeddings from the catalog's MiniLM),
    and for `train` chunks the normalized input each holds."""
    if settings.corpus == "train":
        if not pool:
            raise ConfigError("eval.rag.corpus=train: the run has no training rows to retrieve from")
        chunks = [Chunk(item.where, item.where, f"{item.key}\nAnswer: {item.reference}") for item in pool]
        return index_chunks(chunks, settings.retriever), {item.where: normalize(item.key) for item in pool}
    return index_corpus(settings.corpus, text_field=settings.text_field, retriever=settings.retriever), {}


def retrieve(items: list[EvalItem], index: Index, inputs: dict[str, str], k: int) -> Retrieved:
    """Each row's prompt with its k best chunks before the question (never a chunk holding the row's own input)."""
    prompts, ids, sources = [], [], []
    for item in items:
        own = normalize(item.key)
        found = [chunk for chunk, _ in index.search(item.key, k + 8) if inputs.get(chunk.id) != own][:k]
        prompts.append(with_documents(tuple(item.prompt), [chunk.text for chunk in found]))
        ids.append([chunk.id for chunk in found])
        sources.append([chunk.source for chunk in found])
    return Retrieved(prompts, ids, sources)

