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

import warnings
from typing import Any
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F

from tunesmith.data.batches import IGNORE_INDEX, Batch
from tunesmith.models.device import compute_dtype

# Config fields under which a model transforms its logits after the head: such models go through
# their own forward without a probe. A softcap barely changes the modest logits of a probe, so the
# probe alone could miss it; any other transformation, in a config field or in code, the probe finds.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")
_CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 16M floats, 64 MB
_PROBE_TOKENS = 16
# Largest mean difference per probe token (nats) between the two paths that is still rounding: the
# head's matmul runs in another shape in each path, and 16-bit logits differ in their last bit.
_PROBE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-4}
_PROBE_TOLERANCE_16BIT = 2e-2
_FAST_PATH: WeakKeyDictionary = WeakKeyDictionary()  # transformers model -> whether the chunked path is its loss


def causal_lm_loss_sum(model: Any, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy of every loss token of `batch` (predict token t from tokens < t)."""
    if choose_loss_path(model):
        return _chunked_head_loss_sum(model, batch)
    return _own_forward_loss_sum(model, batch)


def choose_loss_path(model: Any) -> bool:
    """Whether the chunked head path computes this model's own loss; decided once per model.

    The chunked path runs the decoder and the output head itself, so anything the model's forward
    does to the logits after the head (a multiplier, a softcap, a scale in code) would be lost. A
    probe of a few tokens, without gradients, compares it with the model's own forward; on a
    mismatch the model keeps its own forward and a warning says so."""
    base = _base_model(model)
    decision = _FAST_PATH.get(base)
    if decision is None:
        configs = (base.config, base.config.get_text_config())
        decision = not any(getattr(config, name, None) for config in configs for name in _LOGIT_TRANSFORMS)
        if decision:
            difference, tolerance = _probe_difference(model)
            decision = difference <= tolerance
            if not decision:
                warnings.warn(f"{type(base).__name__} changes its logits after the output head (the chunked loss "
                              f"differs from its own forward by {difference:.3g} nats per token); tunesmith uses "
                              "the model's own forward for its loss, which is slower and holds all logits in memory",
                              stacklevel=2)
        _FAST_PATH[base] = decision
    return decision


def _probe_difference(model: Any) -> tuple[float, float]:
    """(mean difference per token between the two loss paths on a short probe, the tolerance for it)."""
    base = _base_model(model)
    vocabulary = base.get_input_embeddings().num_embeddings
    device = base.get_input_embeddings().weight.device
    ids = torch.randint(0, vocabulary, (1, _PROBE_TOKENS), generator=torch.Generator().manual_seed(0)).to(device)
    probe = Batch(ids, ids.clone(), None, _PROBE_TOKENS - 1, _PROBE_TOKENS)
    modes = {module: module.training for module in model.modules()}
    model.eval()  # no dropout: both paths must see the same network
    try:
        with torch.no_grad():
            difference = (_chunked_head_loss_sum(model, probe) - _own_forward_loss_sum(model, probe)).abs().item()
    finally:
        for module, training in modes.items():
            module.training = training
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) \
        else base.get_input_embeddings().weight.dtype
    return difference / probe.n_loss_tokens, _PROBE_TOLERANCE.get(dtype, _PROBE_TOLERANCE_16BIT)


def _own_forward_loss_sum(model: Any, batch: Batch) -> torch.Tensor:
    """The loss from the model's own logits: every transformation in its forward is kept."""
    targets = batch.labels[:, 1:]
    selected = targets != IGNORE_INDEX
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1][selected].float(), targets[selected], reduction="sum")


def _chunked_head_loss_sum(model: Any, batch: Batch) -> torch.Tensor:
    """The loss from the decoder's hidden states, with the head applied only at loss positions."""
    targets = batch.labels[:, 1:]
    selected = targets != IGNORE_INDEX
    base = _base_model(model)
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
    dtype = compute_dtype(hidden)
    chunk = chunk or max(16, _CHUNK_ELEMENTS // weight.shape[0])
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk, dtype)
    return _chunked_loss(hidden, weight, bias, targets, chunk, dtype)


def _chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                  chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """The loss alone, for evaluation."""
    weight_c = weight.to(compute_dtype)
    bias_f = bias.float() if bias is not None else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(targets), chunk):
        _, lse, target_logits = _chunk_logits(hidden[start:start + chunk].to(compute_dtype), weight_c, bias_f,
                                              targets[start:start + chunk])
        total += (lse - target_logits).sum()
    return total


def _chunk_logits(h: torch.Tensor, weight_c: torch.Tensor, bias_f: torch.Tensor | None,
                  targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A chunk's logits (the compute dtype's; fp32 with a bias, added after the matmul), each row's
    log-sum-exp and its target's logit, both fp32."""
    logits = h @ weight_c.T
    if bias_f is not None:
        logits = logits.float() + bias_f
    return logits, _logsumexp(logits), logits.gather(1, targets[:, None]).squeeze(1).float()


_LSE_ROWS = 64  # rows of bf16 logits made fp32 at a time: 12 MB, in cache, where a whole chunk's copy is 67 MB


def _logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp of each row, in fp32 whatever the logits' dtype (bf16's would be 2^-8 of it off)."""
    if logits.dtype == torch.float32:
        return torch.logsumexp(logits, dim=-1)
    result = torch.empty(len(logits), dtype=torch.float32, device=logits.device)
    exact = torch.empty((min(_LSE_ROWS, len(logits)), logits.shape[1]), dtype=torch.float32, device=logits.device)
    for start in range(0, len(logits), _LSE_ROWS):
        part = logits[start:start + _LSE_ROWS]
        rows = exact[: len(part)]
        rows.copy_(part)
        torch.logsumexp(rows, dim=-1, out=result[start:start + _LSE_ROWS])
    return result


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients in one pass over chunks; backward only scales the stored gradients."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                chunk: int, compute_dtype: torch.dtype) -> torch.Tensor:
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        weight_c = weight.to(compute_dtype)
        bias_f = bias.float() if bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_bias else None
        rows = torch.arange(min(chunk, max(len(targets), 1)), device=hidden.device)
        for start in range(0, len(targets), chunk):
            h = hidden[start:start + chunk].to(compute_dtype)
            t = targets[start:start + chunk]
            logits, lse, target_logits = _chunk_logits(h, weight_c, bias_f, t)
            total += (lse - target_logits).sum()
            # The gradient of the summed loss, softmax - one-hot, in the logits' dtype (PyTorch's
            # softmax accumulates in fp32): 3x faster here than softmax in fp32 and a cast to bf16,
            # the same values to one bf16 rounding. The target's entry, p - 1, comes from the fp32
            # log-sum-exp, since rounding p first would cost up to 2^-9 of it (all of a small p - 1).
            probs = torch.softmax(logits, dim=-1)
            probs[rows[: len(t)], t] = (target_logits - lse).exp_().sub_(1.0).to(probs.dtype)
            grad_logits = probs.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + chunk] = (grad_logits @ weight_c).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ h).float()
            if grad_bias is not None:
                grad_bias += probs.sum(dim=0)  # fp32: with a bias, the logits are fp32 (it is added after the matmul)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_output.float()
        return (None if grad_hidden is None else grad_hidden * scale.to(grad_hidden.dtype),
                None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype),
                None if grad_bias is None else (grad_bias * scale).to(ctx.bias_dtype),
                None, None, None)


def sequence_log_probs(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log-probabilities of each row's loss tokens, number of those tokens), per row."""
    token_log_probs, rows = loss_token_log_probs(model, batch)
    sums = torch.zeros(batch.input_ids.shape[0], dtype=torch.float32, device=token_log_probs.device)
    return sums.index_add(0, rows, token_log_probs), (batch.labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def loss_token_log_probs(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of every loss token of `batch`, row by row in order, and each one's row."""
    targets = batch.labels[:, 1:]
    selected = targets != IGNORE_INDEX
    rows = torch.nonzero(selected)[:, 0]
    base = _base_model(model)
    head = base.get_output_embeddings()
    if not choose_loss_path(model) or type(head) is not torch.nn.Linear:
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits[:, :-1][selected]
        token_log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[selected][:, None]).squeeze(1)
    else:
        hidden = base.get_decoder()(
            input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
        ).last_hidden_state[:, :-1][selected]
        token_log_probs = -linear_cross_entropy_tokens(hidden, head.weight, head.bias, targets[selected])
    return token_log_probs, rows


def linear_cross_entropy_tokens(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T + bias, targets) per token, in chunks; the weight must be frozen
    (a trained head goes through plain autograd, since its gradient needs every token's weight)."""
    dtype = compute_dtype(hidden)
    chunk = chunk or max(16, _CHUNK_ELEMENTS // weight.shape[0])
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        logits = (hidden.to(dtype) @ weight.to(dtype).T).float()
        if bias is not None:
            logits = logits + bias.float()
        return F.cross_entropy(logits, targets, reduction="none")
    if torch.is_grad_enabled() and hidden.requires_grad:
        return _TokenLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk, dtype)
    with torch.no_grad():
        return _TokenLinearCrossEntropy.forward(_NoContext(), hidden, weight, bias, targets, chunk, dtype)


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
