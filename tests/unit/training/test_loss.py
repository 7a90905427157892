import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tunesmith.data.batches import collate
from tunesmith.data.tokenize import TokenizedExample
from tunesmith.training.loss import causal_lm_loss_sum


def test_loss_sum_equals_transformers_mean_loss_times_loss_tokens(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = np.array([5, 17, 300, 41, 99, 1000, 7, 2], dtype=np.int32)
    mask = np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=bool)
    batch = collate([TokenizedExample(ids, mask, "t", 1)], [[0]], pad_id=2)
    with torch.no_grad():
        ours = causal_lm_loss_sum(model, batch)
        reference = model(input_ids=batch.input_ids, labels=batch.labels).loss
    assert batch.n_loss_tokens == 5
    assert torch.allclose(ours, reference * 5, rtol=1e-5)


def test_loss_goes_through_peft_wrappers(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = np.arange(20, 40, dtype=np.int32)
    batch = collate([TokenizedExample(ids, np.ones(20, dtype=bool), "t", 1)], [[0]], pad_id=2)
    loss = causal_lm_loss_sum(wrapped, batch)
    loss.backward()
    lora_grads = [p.grad for n, p in wrapped.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("train_weight", [False, True])
def test_chunked_linear_cross_entropy_matches_the_plain_computation(autocast, train_weight):
    from tunesmith.training.loss import linear_cross_entropy_sum

    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=train_weight)
    targets = torch.randint(0, 50, (37,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reference = F.cross_entropy((hidden @ weight.T).float(), targets, reduction="sum")
    reference.backward(torch.tensor(0.5))
    expected_hidden = hidden.grad.clone()
    expected_weight = weight.grad.clone() if train_weight else None
    hidden.grad = None
    weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ours = linear_cross_entropy_sum(hidden, weight, None, targets, chunk=16)  # 3 chunks
    ours.backward(torch.tensor(0.5))
    tolerance = 2e-2 if autocast else 1e-5
    assert torch.allclose(ours, reference, rtol=tolerance)
    assert torch.allclose(hidden.grad, expected_hidden, rtol=tolerance, atol=tolerance)
    if train_weight:
        assert torch.allclose(weight.grad, expected_weight, rtol=tolerance, atol=tolerance)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert torch.allclose(linear_cross_entropy_sum(hidden, weight, None, targets, chunk=16), ours, rtol=1e-6)


def test_bf16_loss_and_its_gradient_are_those_of_the_bf16_logits_to_one_rounding():
    """Under bf16 the loss takes its log-sum-exp in fp32, in blocks of rows, and its gradient from
    bf16 softmax with the target's p - 1 from the fp32 log-sum-exp. With one-hot hidden rows each
    row's logit gradient is a column of the weight's gradient, exactly (one product of 1.0)."""
    from tunesmith.training.loss import _LSE_ROWS, linear_cross_entropy_sum

    torch.manual_seed(0)
    vocab, rows = 300, 2 * _LSE_ROWS + 37  # a chunk of three blocks of rows, the last one short
    columns = torch.randperm(vocab)[:rows]
    hidden = torch.eye(vocab, dtype=torch.bfloat16)[columns]
    targets = torch.randint(0, vocab, (rows,))
    weight = (torch.randn(vocab, vocab) * 4).to(torch.bfloat16)  # logits of trained models' size
    weight[targets[:8], columns[:8]] = 17.0  # rows whose target is near-certain: p - 1 is small
    weight.requires_grad_()
    logits = (hidden @ weight.detach().T).double()
    ours = linear_cross_entropy_sum(hidden, weight, None, targets, chunk=rows)
    ours.backward()
    reference = F.cross_entropy(logits, targets, reduction="sum")
    assert ours.dtype == torch.float32
    assert abs(ours.item() - reference.item()) <= 1e-6 * reference.item()
    grad_logits = weight.grad.double()[:, columns].T
    exact = torch.softmax(logits, dim=-1) - F.one_hot(targets, vocab).double()
    near_certain = exact[torch.arange(8), targets[:8]]
    assert (near_certain > -0.2).all() and (near_certain < -1e-3).all()
    # one bf16 rounding (half a step of 2^-7) of the exact value, and for p - 1 also the fp32
    # log-sum-exp's own error (rounding p to bf16 first would be off by up to 2^-9 p, 6% of it here)
    error = (grad_logits - exact).abs()
    assert (error <= 2.0 ** -8 * exact.abs() + 2e-6).all()
    assert (error[F.one_hot(targets, vocab) == 0] <= 2.0 ** -8 * exact.abs()[F.one_hot(targets, vocab) == 0]).all()


def _tiny_falcon_h1(lm_head_multiplier: float):
    """A real architecture whose forward multiplies the logits by a config field the allow-list lacks."""
    from transformers import FalconH1Config, FalconH1ForCausalLM

    config = FalconH1Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16, mamba_d_state=16,
        mamba_n_groups=1, mamba_chunk_size=16, lm_head_multiplier=lm_head_multiplier,
    )
    torch.manual_seed(0)
    return FalconH1ForCausalLM(config)


def _batch(rows: list[list[int]], prompt_tokens: int = 2):
    examples = [TokenizedExample(np.array(ids, dtype=np.int32), np.arange(len(ids)) >= prompt_tokens, "t", 1)
                for ids in rows]
    return collate(examples, [[index] for index in range(len(rows))], pad_id=0)  # one example per row


def test_a_model_that_scales_its_logits_in_its_forward_keeps_its_own_loss():
    from tunesmith.training.loss import sequence_log_probs

    model = _tiny_falcon_h1(lm_head_multiplier=4.0).eval()
    batch = _batch([[5, 17, 200, 41, 99, 250, 7, 2], [9, 8, 7, 6, 5]])
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = causal_lm_loss_sum(model, batch)  # decided on first use, as when perplexity.py calls it
        log_probs, counts = sequence_log_probs(model, batch)
        logits = model(input_ids=batch.input_ids).logits[:, :-1].float()
    targets = batch.labels[:, 1:]
    reference = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # IGNORE_INDEX -> 0
    assert torch.allclose(ours, reference.sum(), rtol=1e-5)
    assert torch.allclose(log_probs, -reference.sum(dim=1), rtol=1e-5)
    assert counts.tolist() == [6, 3]
    said = [str(w.message) for w in caught if "changes its logits" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("FalconH1ForCausalLM")  # once per model, not per call

    from tunesmith.training.loss import choose_loss_path

    assert choose_loss_path(model) is False


def test_a_plain_llama_keeps_the_chunked_path_and_the_probe_leaves_its_mode(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.training.loss import choose_loss_path

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_loss_path(model) is True
    assert all(module.training for module in model.modules())
    # a model whose multiplier is 1 (a hybrid attention/Mamba decoder) is no false alarm either
    falcon = _tiny_falcon_h1(lm_head_multiplier=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_loss_path(falcon) is True


@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_linear_cross_entropy_trains_an_output_bias(autocast):
    from tunesmith.training.loss import linear_cross_entropy_sum

    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reference = F.cross_entropy((hidden @ weight.T + bias).float(), targets, reduction="sum")
    expected = torch.autograd.grad(reference * 0.5, [hidden, weight, bias])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ours = linear_cross_entropy_sum(hidden, weight, bias, targets, chunk=16)  # 3 chunks
    grads = torch.autograd.grad(ours * 0.5, [hidden, weight, bias])
    tolerance = 2e-2 if autocast else 1e-5
    assert torch.allclose(ours, reference, rtol=tolerance)
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=tolerance, atol=tolerance)


def test_full_fine_tuning_of_a_model_with_a_head_bias_matches_its_own_gradients():
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    model = PhiForCausalLM(PhiConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0))
    batch = _batch([[5, 17, 200, 41, 99, 250, 7, 2]])
    ours = causal_lm_loss_sum(model, batch)
    ours.backward()
    our_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    reference = model(input_ids=batch.input_ids, labels=batch.labels).loss * batch.n_loss_tokens
    reference.backward()
    assert torch.allclose(ours, reference, rtol=1e-5)
    assert our_grads["lm_head.bias"].abs().sum() > 0
    for name, p in model.named_parameters():
        assert torch.allclose(our_grads[name], p.grad, rtol=1e-4, atol=1e-6), name
