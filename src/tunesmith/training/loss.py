"""Causal language-model loss as a sum over loss tokens, with the output head applied only where
the loss needs it, in chunks.

The head of a small model is a large share of its compute and memory (SmolLM2-135M: 28M of 135M
parameters, a 49,152-wide vocabulary). Running it only on positions whose next token is in the loss
skips that work for every prompt and padding position. Computing the cross-entropy and its
gradient chunk by chunk, during the forward pass, means the [loss tokens x vocabulary] logits, their
log-softmax and its gradient are never held in full: only one chunk of them at a time (as Liger's
fused linear cross-entropy does; written here because Liger needs Triton, which CPUs lack).

Returning a sum (not a mean) lets the loop divide by the loss tokens of the whole optimizer step,
so gradient accumulation does not change the update.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.batches import IGNORE_INDEX, Batch

# Config fields under which a model transforms its logits after the head; such models go through
# their own forward so that the transformation is kept.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")
_CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 16M floats, 64 MB


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
    head = base.get_output_embeddings()
    if type(head) is torch.nn.Linear:  # a plain head (not wrapped by an adapter)
        return linear_cross_entropy_sum(hidden[:, :-1][selected], head.weight, head.bias, targets[selected])
    return F.cross_entropy(head(hidden[:, :-1][selected]).float(), targets[selected], reduction="sum")


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """sum(cross_entropy(hidden @ weight.T + bias, targets)), computed in chunks of positions."""
    compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype
    chunk = chunk or max(16, _CHUNK_ELEMENTS // weight.shape[0])
    if bias is not None and bias.requires_grad:
        raise NotImplementedError("a trainable output bias is not supported by the chunked loss")
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk, compute_dtype)
    return _chunked_loss(hidden, weight, bias, targets, chunk, compute_dtype)


def _chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                  chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """The loss alone, for evaluation."""
    weight_c = weight.to(compute_dtype)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(targets), chunk):
        logits = (hidden[start:start + chunk].to(compute_dtype) @ weight_c.T).float()
        if bias is not None:
            logits += bias.float()
        t = targets[start:start + chunk]
        total += (torch.logsumexp(logits, dim=-1) - logits.gather(1, t[:, None]).squeeze(1)).sum()
    return total


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients in one pass over chunks; backward only scales the stored gradients."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        weight_c = weight.to(compute_dtype)
        bias_f = bias.float() if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        rows = torch.arange(min(chunk, max(len(targets), 1)), device=hidden.device)
        for start in range(0, len(targets), chunk):
            h = hidden[start:start + chunk].to(compute_dtype)
            t = targets[start:start + chunk]
            logits = (h @ weight_c.T).float()
            if bias_f is not None:
                logits += bias_f
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place: the gradient of the summed loss
            probs[rows[: len(t)], t] -= 1.0
            grad_logits = probs.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + chunk] = (grad_logits @ weight_c).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output.float()
        return (None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
                None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype),
                None, None, None, None)


def sequence_log_probs(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log-probabilities of each row's loss tokens, number of those tokens), per row."""
    targets = batch.labels[:, 1:]
    selected = targets != IGNORE_INDEX
    rows = torch.nonzero(selected)[:, 0]
    base = _base_model(model)
    head = base.get_output_embeddings()
    if any(getattr(base.config, name, None) for name in _LOGIT_TRANSFORMS) or type(head) is not torch.nn.Linear:
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits[:, :-1][selected]
        token_log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[selected][:, None]).squeeze(1)
    else:
        hidden = base.get_decoder()(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
        ).last_hidden_state[:, :-1][selected]
        token_log_probs = -linear_cross_entropy_tokens(hidden, head.weight, head.bias, targets[selected])
    sums = torch.zeros(batch.input_ids.shape[0], dtype=torch.float32, device=token_log_probs.device)
    return sums.index_add(0, rows, token_log_probs), selected.sum(dim=1)


def linear_cross_entropy_tokens(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T + bias, targets) per token, in chunks; the weight must be frozen
    (a trained head goes through plain autograd, since its gradient needs every token's weight)."""
    compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype
    chunk = chunk or max(16, _CHUNK_ELEMENTS // weight.shape[0])
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        logits = (hidden.to(compute_dtype) @ weight.to(compute_dtype).T).float()
        if bias is not None:
            logits = logits + bias.float()
        return F.cross_entropy(logits, targets, reduction="none")
    if torch.is_grad_enabled() and hidden.requires_grad:
        return _TokenLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk, compute_dtype)
    with torch.no_grad():
        return _TokenLinearCrossEntropy.forward(_NoContext(), hidden, weight, bias, targets, chunk, compute_dtype)


class _NoContext:
    needs_input_grad = (False, False)

    def save_for_backward(self, *tensors: Any) -> None:
        pass


class _TokenLinearCrossEntropy(torch.autograd.Function):
    """Per-token losses; each token's gradient is computed in the forward pass and scaled in backward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
        want_hidden = ctx.needs_input_grad[0]
        weight_c = weight.to(compute_dtype)
        losses = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        rows = torch.arange(min(chunk, max(len(targets), 1)), device=hidden.device)
        for start in range(0, len(targets), chunk):
            t = targets[start:start + chunk]
            logits = (hidden[start:start + chunk].to(compute_dtype) @ weight_c.T).float()
            if bias is not None:
                logits += bias.float()
            lse = torch.logsumexp(logits, dim=-1)
            losses[start:start + chunk] = lse - logits.gather(1, t[:, None]).squeeze(1)
            if grad_hidden is not None:
                probs = logits.sub_(lse[:, None]).exp_()
                probs[rows[: len(t)], t] -= 1.0
                grad_hidden[start:start + chunk] = (probs.to(compute_dtype) @ weight_c).to(hidden.dtype)
        ctx.save_for_backward(grad_hidden)
        return losses

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_output[:, None].to(grad_hidden.dtype), None, None, None, None, None)


def _base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers are injected into it in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
