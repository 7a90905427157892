"""Supervised fine-tuning (instruction tuning): learn the assistant's replies of the examples."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.config import RunConfig
from tunesmith.data.batches import collate
from tunesmith.data.pipeline import PreparedData, prepare_data
from tunesmith.data.prompting import Retrieve
from tunesmith.data.template import TemplateInfo
from tunesmith.models.load import ModelSource, load_causal_lm
from tunesmith.models.loss_eval import LossFn
from tunesmith.training.loss import causal_lm_loss_sum
from tunesmith.training.registry import Method, register_method


def prepare_chat_data(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    return prepare_data(config.data, tokenizer, info, config.train.seed, config.task, training_retriever(config))


def training_retriever(config: RunConfig) -> Retrieve | None:
    """data.rag's retriever: each training question -> the texts of the k best chunks of its corpus."""
    settings = config.data.rag
    if not settings.corpus:
        return None
    from tunesmith.models.retrieval import index_corpus

    index = index_corpus(settings.corpus, text_field=settings.text_field, retriever=settings.retriever)
    return lambda question: [chunk.text for chunk, _ in index.search(question, settings.k)]


def load_causal(source: ModelSource, config: RunConfig, dtype: torch.dtype, data: PreparedData) -> Any:
    return load_causal_lm(source, revision=config.model.revision, trust_remote_code=config.model.trust_remote_code,
                          attn_implementation=config.model.attn_implementation, dtype=dtype,
                          quantization=config.model.quantization)


def causal_loss(config: RunConfig, data: PreparedData) -> LossFn:
    return causal_lm_loss_sum


SFT = register_method(Method(
    name="sft",
    description="supervised fine-tuning: learn the assistant's replies (chat, instruction or labelled rows)",
    prepare_data=prepare_chat_data,
    load_model=load_causal,
    collate=collate,
    make_loss=causal_loss,
))
