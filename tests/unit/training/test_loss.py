import numpy as np
import torch

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
