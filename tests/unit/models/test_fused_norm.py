"""The fused RMSNorm (models/fused_norm.py) against transformers' own, the path it replaces while
training on CPU: the same outputs, the same input gradients, and transformers' path wherever the
module is not Llama's RMSNorm with a frozen scale."""

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from tests.unit.models.tiny_lora import lora_gradients, tiny_lora_model
from tunesmith.models.fused_norm import leave_fused_norms, use_fused_norms

CPU = torch.device("cpu")


def _norm(cls=LlamaRMSNorm, dtype=torch.bfloat16, size=48):
    torch.manual_seed(0)
    norm = cls(size, eps=1e-5).to(dtype)
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    norm.weight.requires_grad_(False)
    return norm


def _run(norm, x, grad):
    x = x.detach().clone().requires_grad_()
    out = norm(x)
    out.backward(grad)
    return out.detach(), x.grad


def _made_by(norm, x):
    return type(norm(x.detach().clone().requires_grad_()).grad_fn).__name__


@pytest.mark.parametrize("cls", [LlamaRMSNorm, Qwen2RMSNorm])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_outputs_equal_and_input_gradients_match_transformers(cls, dtype):
    norm = _norm(cls, dtype)
    x = (torch.randn(3, 7, 48) * 4).to(dtype)  # rows of different scales
    x[0] *= 0.01
    grad = torch.randn(3, 7, 48).to(dtype)
    expected = _run(norm, x, grad)
    assert use_fused_norms(norm, CPU) == 1 and _made_by(norm, x) == "_RMSNormBackward"
    got = _run(norm, x, grad)
    # fp32 rounding of the row's scale (a sum of squares against a mean of them) may move a bf16
    # output by one unit in the last place, rarely; the gradient differs by fp32 rounding only
    assert torch.allclose(got[0].float(), expected[0].float(), rtol=2 ** -7 if dtype == torch.bfloat16 else 1e-5,
                          atol=1e-6)
    difference = (got[1].float() - expected[1].float()).norm() / expected[1].float().norm()
    assert difference < (2e-3 if dtype == torch.bfloat16 else 1e-5)


def test_bf16_errs_no_more_than_transformers_against_fp64():
    norm = _norm()
    x, grad = (torch.randn(64, 48) * 3).to(torch.bfloat16), torch.randn(64, 48).to(torch.bfloat16)
    exact_x = x.double().requires_grad_()
    weight = norm.weight.double()
    exact = weight * (exact_x * torch.rsqrt(exact_x.pow(2).mean(-1, keepdim=True) + 1e-5))
    exact.backward(grad.double())
    theirs = _run(norm, x, grad)
    use_fused_norms(norm, CPU)
    ours = _run(norm, x, grad)

    def error(got, want):
        return ((got.double() - want).norm() / want.norm()).item()

    assert error(ours[0], exact.detach()) <= 1.01 * error(theirs[0], exact.detach())
    assert error(ours[1], exact_x.grad) <= 1.01 * error(theirs[1], exact_x.grad)


def test_a_trained_scale_other_norms_and_other_devices_keep_their_own_forward():
    trained = _norm()
    trained.weight.requires_grad_(True)
    use_fused_norms(trained, CPU)
    assert _made_by(trained, torch.randn(2, 48).to(torch.bfloat16)) != "_RMSNormBackward"

    class Shifted(LlamaRMSNorm):  # Gemma's kind: scales by 1 + weight, so not Llama's computation
        def forward(self, hidden_states):
            return super().forward(hidden_states) + hidden_states

    assert use_fused_norms(Shifted(48), CPU) == 0
    assert use_fused_norms(torch.nn.LayerNorm(48), CPU) == 0
    assert use_fused_norms(_norm(), torch.device("meta")) == 0


def test_leaving_gives_transformers_forward_back():
    norm = _norm()
    use_fused_norms(norm, CPU)
    leave_fused_norms(norm)
    assert "forward" not in vars(norm)
    assert _made_by(norm, torch.randn(2, 48).to(torch.bfloat16)) != "_RMSNormBackward"


def test_a_lora_model_gets_the_same_gradients(tiny_model_dir):
    """The whole tiny Llama with LoRA in fp32: every adapter gradient as with transformers' norms."""
    expected = lora_gradients(tiny_lora_model(tiny_model_dir))
    model = tiny_lora_model(tiny_model_dir)
    assert use_fused_norms(model, CPU) == 5  # 2 a layer in 2 layers, and the final one
    got = lora_gradients(model)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6, rtol=1e-4), name


def test_the_fused_norms_outlive_switching_between_train_and_eval(tiny_model_dir):
    """With the `kernels` package installed, transformers loads models with hub kernels on and
    kernelizes again at every train()/eval() switch, which put the class's forward back on every
    RMSNorm: training was back on transformers' norms after its first evaluation."""
    from tunesmith.models.load import load_causal_lm, resolve_model

    model = load_causal_lm(resolve_model(str(tiny_model_dir)), dtype=torch.bfloat16)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    assert use_fused_norms(model, CPU) == 5
    model.eval()
    model.train()
    norms = [m for m in model.modules() if isinstance(m, LlamaRMSNorm)]
    x = torch.randn(2, 64).to(torch.bfloat16)
    assert all(_made_by(norm, x) == "_RMSNormBackward" for norm in norms)
