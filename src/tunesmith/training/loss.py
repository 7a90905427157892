"""Causal language-model loss as a sum over loss tokens, with the output head applied only where
the loss needs it.

The head of a small model is a large share of its compute (SmolLM2-135M: 28M of 135M parameters,
a 49,152-wide vocabulary). Running it only on positions whose next token is in the loss (the
assistant's replies) skips that work for every prompt and padding position, and never holds the
[batch, length, vocabulary] logits in memory. Returning a sum (not a mean) lets the loop divide
by the loss tokens of the whole optimizer step, so gradient accumulation does not change the update.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.batches import IGNORE_INDEX, Batch

# Config fields under which a model transforms its logits after the head; such models go through
# their own forward so that the transformation is kept.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")


def causal_lm_loss_sum(model: Any, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy of every loss token of `batch` (predict token t from tokens < t)."""
    targets = batch.labels[:, 1:]
    selected = targets != IGNORE_INDEX
    base = _base_model(model)
    if any(getattr(base.config, name, None) for name in _LOGIT_TRANSFORMS):
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1][selected].float(), targets[selected], reduction="sum")
    hidden = base.get_decoder()(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
    ).last_hidden_state
    logits = base.get_output_embeddings()(hidden[:, :-1][selected])
    return F.cross_entropy(logits.float(), targets[selected], reduction="sum")


def _base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers are injected into it in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
