"""Causal self-attention for training on CPU, in query blocks, registered with transformers'
attention interface as "tunesmith_cpu".

Why our own: on CPU, PyTorch's SDPA kernels are slow at training shapes. Its flash kernel (forward
and backward) ran at about a tenth of the bf16 matmul peak on SmolLM2-135M's (4 rows, 9 query
heads sharing 3 key/value heads, head size 64), and its math kernel repeats the keys and values for
every query head and computes the masked half. This one, measured forward + backward on those
shapes in bf16 (benchmarks/README.md has the table):

- stacks the query heads that share a key/value head along the rows, so each (row, key/value head)
  is one matrix product with no repeated keys or values;
- splits the queries into blocks of ~128 positions, each against only the keys up to its end (the
  causal mask's upper part is never computed), with the mask added inside the product (baddbmm);
- computes scores and probabilities in fp32 and the product with the values in the input dtype, and
  recomputes the probabilities in the backward pass, as the flash kernel does, so what
  autograd keeps is the queries, keys and values only (memory grows with the width, not its square).

In fp32 (a CPU without native bf16) it is used as well: whole training runs on a 2-core AVX2 CPU
were 1.4-2.6% faster with it than with SDPA's kernels in each of 3 alternating pairs (Alpaca, 64
rows), though flash alone is the faster kernel below ~400 tokens and at 1024 there (benchmarks/attention_cpu.py
--dtype float32).

It applies only where it is exactly causal attention over the whole sequence: no attention mask (the
training batches are right-padded, see data/batches.py), no dropout, queries as long as keys, no
sliding window, soft-capping or position bias. Everything else goes to transformers' SDPA path.
"""

from __future__ import annotations

import math
from typing import Any

import torch

NAME = "tunesmith_cpu"
_BLOCK = 128  # query positions per block: 64 and 256 were 5-60% slower at 160-512 tokens


def _blocks(length: int) -> list[tuple[int, int]]:
    count = max(1, round(length / _BLOCK))
    edges = [round(length * i / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _causal_bias(start: int, end: int, repeats: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask of query positions start..end-1 against keys 0..end-1, for `repeats` stacked heads."""
    bias = torch.zeros(end - start, end, dtype=dtype)
    bias[:, start:] = torch.full((end - start, end - start), float("-inf"), dtype=dtype).triu_(1)
    return bias.repeat(repeats, 1)


class _BlockCausalAttention(torch.autograd.Function):
    """query [B, H, L, D], key/value [B, K, L, D] (H a multiple of K) -> [B, L, H, D]."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        batch, heads, length, size = query.shape
        kv_heads = key.shape[1]
        group = heads // kv_heads
        keys = key.reshape(batch * kv_heads, length, size)
        values = value.reshape(batch * kv_heads, length, size)
        out = torch.empty(batch, length, kv_heads, group, size, dtype=query.dtype, device=query.device)
        exact_keys = keys.float()
        for start, end in _blocks(length):
            rows = _query_block(query, kv_heads, start, end)
            probs = _probabilities(rows, exact_keys[:, :end], start, end, group, scale).to(values.dtype)
            block = torch.bmm(probs, values[:, :end]).view(batch, kv_heads, group, end - start, size)
            out[:, start:end] = block.permute(0, 3, 1, 2, 4)
        ctx.save_for_backward(query, keys, values)
        ctx.scale = scale
        return out.view(batch, length, heads, size)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        query, keys, values = ctx.saved_tensors
        batch, heads, length, size = query.shape
        kv_heads = keys.shape[0] // batch
        group = heads // kv_heads
        grad_blocks = grad_out.reshape(batch, length, kv_heads, group, size)
        grad_query = torch.empty(batch, kv_heads, group, length, size, dtype=query.dtype, device=query.device)
        # summed over blocks, so in fp32 (each block's part is a bf16 product)
        grad_keys = torch.zeros(keys.shape, dtype=torch.float32, device=keys.device)
        grad_values = torch.zeros(values.shape, dtype=torch.float32, device=values.device)
        exact_keys = keys.float()
        for start, end in _blocks(length):
            rows = _query_block(query, kv_heads, start, end)
            exact_probs = _probabilities(rows, exact_keys[:, :end], start, end, group, ctx.scale)
            probs = exact_probs.to(values.dtype)
            grad_rows = grad_blocks[:, start:end].permute(0, 2, 3, 1, 4).reshape(batch * kv_heads, -1, size)
            grad_values[:, :end] += torch.bmm(probs.transpose(1, 2), grad_rows)
            grad_probs = torch.bmm(grad_rows, values[:, :end].transpose(1, 2))
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            grad_query[:, :, :, start:end] = torch.bmm(grad_scores, keys[:, :end]).view(
                batch, kv_heads, group, end - start, size)
            grad_keys[:, :end] += torch.bmm(grad_scores.transpose(1, 2), rows)
        grad_query = grad_query.mul_(ctx.scale).view(batch, heads, length, size)
        grad_key = grad_keys.mul_(ctx.scale).to(keys.dtype).view(batch, kv_heads, length, size)
        return grad_query, grad_key, grad_values.to(values.dtype).view(batch, kv_heads, length, size), None


def _query_block(query: torch.Tensor, kv_heads: int, start: int, end: int) -> torch.Tensor:
    """Positions start..end-1 of every query head, the heads sharing a key/value head stacked: [B*K, G*n, D]."""
    batch, heads, length, size = query.shape
    grouped = query.unflatten(1, (kv_heads, heads // kv_heads))  # [B, K, G, L, D]
    return grouped[:, :, :, start:end].reshape(batch * kv_heads, -1, size)


def _probabilities(rows: torch.Tensor, keys: torch.Tensor, start: int, end: int, group: int,
                   scale: float) -> torch.Tensor:
    """Softmax of the scaled, masked scores, in fp32 (keys given in fp32): bf16 scores lose 0.4% of
    a logit, which exp turns into 4-8% of a weight at the logits trained models reach."""
    bias = _causal_bias(start, end, group, torch.float32).to(rows.device)
    scores = torch.baddbmm(bias.expand(rows.shape[0], -1, -1), rows.float(), keys.transpose(1, 2), alpha=scale)
    return torch.softmax(scores, dim=-1)


def block_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           scale: float | None = None) -> torch.Tensor:
    """Causal attention of query [B, H, L, D] over key/value [B, K, L, D]; returns [B, L, H, D]."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    device = query.device.type
    if torch.is_autocast_enabled(device):  # as autocast runs SDPA: in its dtype (rotary fp32 queries, bf16 values)
        dtype = torch.get_autocast_dtype(device)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    with torch.autocast(device, enabled=False):  # the products in the dtype given
        return _BlockCausalAttention.apply(query, key, value, scale)


def applies(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
            dropout: float, is_causal: bool | None, kwargs: dict) -> bool:
    """Whether this call is plain causal self-attention over the whole sequence, on CPU."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    return (query.device.type == "cpu" and attention_mask is None and not dropout and bool(causal)
            and query.shape[2] > 1 and query.shape[2] == key.shape[2] and query.shape[1] % key.shape[1] == 0
            and (query.dtype == key.dtype == value.dtype or torch.is_autocast_enabled("cpu"))
            and query.shape[-1] == key.shape[-1] == value.shape[-1]
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None
            and kwargs.get("sliding_window") is None and kwargs.get("s_aux") is None)


def attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: [B, L, H, D] out; anything else goes to SDPA."""
    if applies(module, query, key, value, attention_mask, dropout, is_causal, kwargs):
        return block_causal_attention(query, key, value, scaling), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def register() -> None:
    """Make "tunesmith_cpu" an attention implementation transformers knows, masked as SDPA is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_training_attention(model: Any, device: torch.device) -> bool:
    """On CPU, a model on SDPA trains with the blocked causal attention (whether it switched). Not
    saved: transformers leaves the implementation out of config.json."""
    config = getattr(model, "config", None)
    if device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa" \
            or not hasattr(model, "set_attn_implementation"):
        return False
    register()
    model.set_attn_implementation(NAME)
    return True


def leave_training_attention(model: Any) -> None:
    """Back to SDPA, the implementation use_training_attention switched from."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME:
        model.set_attn_implementation("sdpa")
