"""Inference with a trained token-classification head: entity spans, with their types and scores,
for texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.data.spans import Entity, tags_to_entities, word_of_tokens, words_of
from tunesmith.models.classifier import load_trained_head, position_limit
from tunesmith.models.device import attention_kernel
from tunesmith.models.generate import pad_rows


@dataclass
class Tagger:
    model: Any
    tokenizer: Any
    tags: list[str]  # BIO tags by id
    name: str
    max_length: int = 512


@dataclass(frozen=True)
class FoundEntity:
    start: int  # character offsets, end exclusive
    end: int
    label: str
    text: str
    score: float  # mean probability of the tag chosen at each of its words

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label, "text": self.text, "score": round(self.score, 6)}


def load_tagger(target: str) -> Tagger:
    """A run folder's (or model folder's) token classifier, in fp32."""
    from transformers import AutoModelForTokenClassification

    model, tokenizer, max_length = load_trained_head(target, AutoModelForTokenClassification, "token-classify")
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return Tagger(model, tokenizer, tags, str(target), max_length)


@torch.no_grad()
def find_entities(tagger: Tagger, texts: list[str], *, batch_size: int = 32) -> tuple[list[list[FoundEntity]], int]:
    """Entities of every text, and how many texts were cut at the tagger's length (their words past
    the cut are tagged O). Each word is tagged by its first sub-token, as in training; tags become
    spans by the CoNLL rules (an I- after O starts an entity)."""
    limit = position_limit(tagger.model)
    max_length = min(tagger.max_length, limit) if limit is not None else tagger.max_length
    encoded = tagger.tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
    cut = sum(len(ids) > max_length for ids in encoded["input_ids"])
    order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
    device = next(tagger.model.parameters()).device
    found: list[list[FoundEntity]] = [[] for _ in texts]
    for first in range(0, len(order), batch_size):
        chunk = order[first:first + batch_size]
        input_ids, attention = pad_rows([encoded["input_ids"][i][:max_length] for i in chunk], tagger.tokenizer.pad_token_id, left=False)
        with attention_kernel(device, input_ids.shape[1]):
            logits = tagger.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        probabilities = torch.softmax(logits.float(), dim=-1).cpu()
        for row, index in enumerate(chunk):
            offsets = encoded["offset_mapping"][index][:max_length]
            found[index] = entities_of(texts[index], offsets, probabilities[row, :len(offsets)], tagger.tags)
    return found, cut


def entities_of(text: str, offsets: list[tuple[int, int]], probabilities: torch.Tensor, tags: list[str]) -> list[FoundEntity]:
    """Spans from the tag probabilities of one text's tokens ([tokens, tags])."""
    words = words_of(text)
    chosen: dict[int, tuple[str, float]] = {}
    best_probability, best_tag = probabilities.max(dim=-1)
    for position, word in enumerate(word_of_tokens(text, offsets)):
        if word is not None and word not in chosen:
            chosen[word] = (tags[int(best_tag[position])], float(best_probability[position]))
    order = sorted(chosen)
    spans, _ = tags_to_entities([chosen[w][0] for w in order], "BIO")
    result = []
    for first, stop, label in spans:
        start, end = words[order[first]][0], words[order[stop - 1]][1]
        score = sum(chosen[order[n]][1] for n in range(first, stop)) / (stop - first)
        result.append(FoundEntity(start, end, label, text[start:end], score))
    return result


def as_entities(found: list[FoundEntity]) -> tuple[Entity, ...]:
    return tuple(Entity(f.start, f.end, f.label) for f in found)
