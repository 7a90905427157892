"""The blocked causal attention (models/attention.py) against PyTorch's SDPA, the kernel it replaces
in training on CPU: the same outputs and gradients, and the model falling back to SDPA wherever the
call is not plain causal self-attention."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from tunesmith.models.attention import (
    NAME,
    block_causal_attention,
    leave_training_attention,
    use_training_attention,
)


def _inputs(batch: int, heads: int, kv_heads: int, length: int, size: int, dtype: torch.dtype, seed: int = 0):
    """Queries, keys and values laid out as a model makes them: [B, L, H, D] memory, viewed [B, H, L, D]."""
    generator = torch.Generator().manual_seed(seed)
    def make(count: int, spread: float) -> torch.Tensor:
        values = torch.randn(batch, length, count, size, generator=generator) * spread
        return values.to(dtype).transpose(1, 2).requires_grad_()
    # spread 2: scores of up to ~20, as trained models' attention logits reach
    return make(heads, 2.0), make(kv_heads, 2.0), make(kv_heads, 1.0), torch.randn(
        batch, heads, length, size, generator=generator).to(dtype)


def _sdpa(query, key, value):
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)


def _ours(query, key, value):
    return block_causal_attention(query, key, value).transpose(1, 2)  # [B, L, H, D] -> [B, H, L, D]


def _run(attend, query, key, value, grad_out):
    for tensor in (query, key, value):
        tensor.grad = None
    out = attend(query, key, value)
    out.backward(grad_out)
    return [out.detach(), query.grad, key.grad, value.grad]


@pytest.mark.parametrize("length", [1, 7, 128, 200, 300])  # one block, several, the last one short
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (3, 3), (6, 1)])
def test_outputs_and_gradients_equal_sdpa_in_fp32(length, heads, kv_heads):
    query, key, value, grad_out = _inputs(2, heads, kv_heads, length, 16, torch.float32)
    expected = _run(_sdpa, query, key, value, grad_out)
    got = _run(_ours, query, key, value, grad_out)
    for name, ours, reference in zip(("output", "query grad", "key grad", "value grad"), got, expected):
        assert ours.shape == reference.shape, name
        assert torch.allclose(ours, reference, atol=2e-5, rtol=1e-4), name


@pytest.mark.parametrize("length", [80, 300])
def test_bf16_error_is_of_the_order_of_sdpa_bf16_error(length):
    """Against fp64, ours in bf16 (scores in fp32, the softmax's gradient in bf16) errs no more than
    1.5x PyTorch's flash kernel, its default for bf16, and under 3x its math kernel (all in fp32)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    query, key, value, grad_out = _inputs(2, 6, 2, length, 64, torch.bfloat16)
    exact_inputs = [t.detach().double().requires_grad_() for t in (query, key, value)]
    exact = _run(_sdpa, *exact_inputs, grad_out.double())
    errors = {}
    for name, attend, backend in (("ours", _ours, None), ("flash", _sdpa, SDPBackend.FLASH_ATTENTION),
                                  ("math", _sdpa, SDPBackend.MATH)):
        with sdpa_kernel(backend) if backend else contextlib.nullcontext():
            got = _run(attend, query, key, value, grad_out)
        errors[name] = [((g.double() - e).norm() / e.norm()).item() for g, e in zip(got, exact)]
    for index in range(4):
        assert errors["ours"][index] <= 1.5 * errors["flash"][index], (index, errors)
        assert errors["ours"][index] <= 3 * errors["math"][index], (index, errors)


def _graph_has(tensor: torch.Tensor, node_name: str) -> bool:
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == node_name:
            return True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


def _loss_and_grads(model, **inputs):
    model.zero_grad()
    output = model(**inputs, use_cache=False)
    loss = output.logits.float().logsumexp(-1).mean()
    loss.backward()
    return loss, output.logits, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_a_model_trains_through_it_on_cpu_and_gets_its_setting_back(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").train()
    ids = torch.randint(3, 1000, (2, 150), generator=torch.Generator().manual_seed(1))
    loss, logits, grads = _loss_and_grads(model, input_ids=ids)
    assert not _graph_has(logits, "_BlockCausalAttentionBackward")
    assert use_training_attention(model, torch.device("cpu")) and model.config._attn_implementation == NAME
    our_loss, our_logits, our_grads = _loss_and_grads(model, input_ids=ids)
    assert _graph_has(our_logits, "_BlockCausalAttentionBackward")
    # fp32 rounding of another summation order: 1.1e-5 on logits up to 9.1 seen on an AVX2 CPU
    assert torch.allclose(our_logits, logits, rtol=0, atol=1e-5 * logits.abs().max().item())
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(our_grads, grads))
    # a padded batch's mask is not plain causal attention: SDPA takes it, with the same result
    mask = torch.ones_like(ids)
    mask[1, 100:] = 0
    masked = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert not _graph_has(masked, "_BlockCausalAttentionBackward")
    leave_training_attention(model)
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(masked, model(input_ids=ids, attention_mask=mask, use_cache=False).logits, atol=1e-6)
    # nothing of it is saved: a model saved while training with it loads anywhere
    assert use_training_attention(model, torch.device("cpu"))
    config = model.config.to_json_string()
    assert NAME not in config


def test_activation_checkpointing_recomputes_it_to_the_same_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.models.device import enable_checkpointing

    ids = torch.randint(3, 1000, (2, 140), generator=torch.Generator().manual_seed(2))
    results = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").train()
        if checkpointing:
            enable_checkpointing(model)
        use_training_attention(model, torch.device("cpu"))
        results.append(_loss_and_grads(model, input_ids=ids))
    (loss, _, grads), (ckpt_loss, _, ckpt_grads) = results
    assert torch.equal(loss, ckpt_loss)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads, ckpt_grads))


def test_other_devices_and_implementations_are_left_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert not use_training_attention(model, torch.device("cpu"))
    assert model.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")
    assert not use_training_attention(model, torch.device("meta"))
    assert model.config._attn_implementation == "sdpa"


def test_under_autocast_fp32_weights_train_through_it_in_bf16(tiny_model_dir):
    """Full fine-tuning under bf16 autocast: rotary makes fp32 queries and keys while the values are
    bf16; autocast runs SDPA in bf16, and so does ours. Against the fp32 gradients, ours err no more
    than SDPA's bf16 ones (1.5x, summed over the model's weights)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").train()
    ids = torch.randint(3, 1000, (2, 150), generator=torch.Generator().manual_seed(3))
    _, _, exact = _loss_and_grads(model, input_ids=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, sdpa_grads = _loss_and_grads(model, input_ids=ids)
        use_training_attention(model, torch.device("cpu"))
        _, our_logits, our_grads = _loss_and_grads(model, input_ids=ids)
    assert _graph_has(our_logits, "_BlockCausalAttentionBackward")
    assert all(g.dtype == torch.float32 for g in our_grads)

    def error(grads):
        return sum((g - e).norm() ** 2 for g, e in zip(grads, exact)) ** 0.5 / sum(e.norm() ** 2 for e in exact) ** 0.5

    assert error(our_grads) <= 1.5 * error(sdpa_grads), (error(our_grads), error(sdpa_grads))
