"""Perplexity of reference answers (given their prompts) and of plain text, with the training loss."""

from __future__ import annotations

from dataclasses import replace

from tunesmith.data.batches import collate, plan_epoch
from tunesmith.data.examples import Example, Message
from tunesmith.data.tokenize import TokenizedExample, tokenize_examples
from tunesmith.eval.items import EvalItem
from tunesmith.models.generate import LoadedModel
from tunesmith.models.loss_eval import evaluate_loss
from tunesmith.training.loss import causal_lm_loss_sum


def reference_loss(loaded: LoadedModel, items: list[EvalItem], *, batch_size: int = 8, max_length: int = 2048) -> float:
    """Mean loss per token of each reference answer (and its stop token), given its prompt."""
    examples = [Example(item.where, 0, "chat", messages=tuple(
        Message(m.role, m.content, train=False) if m.role == "assistant" else m for m in item.prompt
    ) + (Message("assistant", item.reference),)) for item in items]
    tokenized = tokenize_examples(examples, loaded.tokenizer, loaded.info, "assistant")
    return _mean_loss(loaded, [_truncate(t, max_length) for t in tokenized], batch_size)


def text_loss(loaded: LoadedModel, texts: list[str], *, batch_size: int = 8, max_length: int = 256) -> float:
    """Mean loss per token of plain texts (each cut to `max_length` tokens)."""
    examples = [Example("text", i, "text", text=text) for i, text in enumerate(texts)]
    tokenized = tokenize_examples(examples, loaded.tokenizer, loaded.info, "all")
    return _mean_loss(loaded, [_truncate(t, max_length) for t in tokenized], batch_size)


def _truncate(example: TokenizedExample, max_length: int) -> TokenizedExample:
    if len(example) <= max_length:
        return example
    return replace(example, input_ids=example.input_ids[:max_length], loss_mask=example.loss_mask[:max_length])


def _mean_loss(loaded: LoadedModel, examples: list[TokenizedExample], batch_size: int) -> float:
    """Mean loss per loss token; each of `loaded.share`'s processes takes its share of the batches."""
    plans = plan_epoch([len(e) for e in examples], "group_by_length", batch_size, 0, seed=0, epoch=0)
    batches = [collate(examples, plan, loaded.tokenizer.pad_token_id) for plan in loaded.share.take(plans)]
    device = next(loaded.model.parameters()).device
    mine = evaluate_loss(loaded.model, batches, causal_lm_loss_sum, device, "fp32") if batches else 0.0
    if loaded.share.size == 1:
        return mine
    tokens = sum(batch.n_loss_tokens for batch in batches)
    parts = loaded.share.gather({loaded.share.rank: (mine * tokens, tokens)}).values()
    return sum(total for total, _ in parts) / max(sum(count for _, count in parts), 1)
