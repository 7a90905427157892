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
