"""Fused LoRA layers (models/fused_lora.py) against peft's own LoRA forward, the path they replace
while training on CPU: the same outputs and gradients, and peft's path wherever a layer is not plain
LoRA on a frozen linear layer."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from tests.unit.models.tiny_lora import lora_gradients, tiny_lora_model
from tunesmith.models.fused_lora import leave_fused_lora, use_fused_lora

CPU = torch.device("cpu")


class _Two(torch.nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.up = torch.nn.Linear(24, 40, bias=bias)
        self.down = torch.nn.Linear(40, 24, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.up(x)))


def _layers(bias: bool = False, dtype: torch.dtype = torch.float32, **lora: object):
    torch.manual_seed(0)
    model = get_peft_model(_Two(bias), LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"], **lora))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; a trained adapter is not
            torch.nn.init.normal_(parameter, std=0.2)
        elif "lora_" not in name:
            parameter.data = parameter.data.to(dtype)
    return model


def _run(model, x: torch.Tensor, grad: torch.Tensor, autocast: bool = False):
    model.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    out.backward(grad)
    lora = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.detach().float(), x.grad.float(), lora


def _made_by(out: torch.Tensor) -> str:
    """The autograd node that made `out`, looking through views."""
    node = out.grad_fn
    while type(node).__name__ == "ViewBackward0":
        node = node.next_functions[0][0]
    return type(node).__name__


def _grad_fn_names(model, x: torch.Tensor) -> set[str]:
    names: set[str] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: names.add(_made_by(out)))
             for name, m in model.named_modules() if name.endswith((".up", ".down"))]
    model(x.requires_grad_())
    for hook in hooks:
        hook.remove()
    return names


@pytest.mark.parametrize("bias", [False, True])
def test_fp32_outputs_and_every_gradient_equal_pefts(bias):
    model = _layers(bias)
    x, grad = torch.randn(3, 5, 24), torch.randn(3, 5, 24)
    expected = _run(model, x, grad)
    assert use_fused_lora(model, CPU) == 2
    assert _grad_fn_names(model, x.clone()) == {"_LoraLinearBackward"}
    got = _run(model, x, grad)
    assert torch.allclose(got[0], expected[0], atol=1e-5, rtol=1e-5)
    assert torch.allclose(got[1], expected[1], atol=1e-5, rtol=1e-5)
    assert set(got[2]) == set(expected[2]) and len(got[2]) == 4  # A and B of both layers, nothing of the base
    for name, value in expected[2].items():
        assert got[2][name].dtype == torch.float32, name
        assert torch.allclose(got[2][name], value, atol=1e-5, rtol=1e-5), name


def test_bf16_under_autocast_errs_no_more_than_pefts_against_fp64():
    """The base in bf16 and autocast on, as tunesmith trains LoRA: against the same computation in
    fp64, the fused layers' output and gradients err no more than peft's (one rounding of the sum
    instead of three)."""
    x, grad = torch.randn(64, 24), torch.randn(64, 24)
    reference = _layers(dtype=torch.float64)
    for parameter in reference.parameters():
        parameter.data = parameter.data.to(torch.bfloat16).double()  # the same bf16-representable weights
    exact = _run(reference.double(), x.double(), grad.double())
    model = _layers(dtype=torch.bfloat16)
    pefts = _run(model, x.to(torch.bfloat16), grad.to(torch.bfloat16), autocast=True)
    use_fused_lora(model, CPU)
    fused = _run(model, x.to(torch.bfloat16), grad.to(torch.bfloat16), autocast=True)

    def error(got, want):
        return ((got.double() - want).norm() / want.norm()).item()

    for index, what in ((0, "output"), (1, "input gradient")):
        assert error(fused[index], exact[index]) <= 1.05 * error(pefts[index], exact[index]) + 1e-4, what
    for name, want in exact[2].items():
        assert error(fused[2][name], want) <= 1.05 * error(pefts[2][name], want) + 1e-4, name


@pytest.mark.parametrize("case", ["dropout", "dora", "adapters off", "merged", "base trained"])
def test_layers_that_are_not_plain_lora_run_pefts_forward(case):
    model = _layers(lora_dropout=0.1 if case == "dropout" else 0.0, use_dora=case == "dora")
    if case == "merged":
        model.merge_adapter()
    if case == "base trained":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    x = torch.randn(2, 24)
    use_fused_lora(model, CPU)
    if case == "adapters off":
        with model.disable_adapter():
            assert "_LoraLinearBackward" not in _grad_fn_names(model, x.clone())
        return
    assert "_LoraLinearBackward" not in _grad_fn_names(model, x.clone())


def test_two_active_adapters_and_other_devices_run_pefts_forward():
    model = _layers()
    assert use_fused_lora(model, torch.device("meta")) == 0
    model.add_adapter("second", LoraConfig(r=2, target_modules=["up", "down"]))
    model.base_model.set_adapter(["default", "second"])
    use_fused_lora(model, CPU)
    assert "_LoraLinearBackward" not in _grad_fn_names(model, torch.randn(2, 24))


def test_leaving_gives_pefts_forward_back_with_the_same_output():
    model = _layers()
    x = torch.randn(2, 24)
    before = model(x)
    use_fused_lora(model, CPU)
    leave_fused_lora(model)
    assert all("forward" not in vars(module) for module in model.modules())
    assert "_LoraLinearBackward" not in _grad_fn_names(model, x.clone())
    assert torch.equal(model(x), before)


def test_a_model_with_checkpointing_gets_the_same_gradients(tiny_model_dir):
    """The whole tiny Llama, LoRA on every linear layer, activation checkpointing on: recomputing a
    fused layer gives the gradients peft's layers give."""
    expected = lora_gradients(tiny_lora_model(tiny_model_dir, checkpointing=True))
    fused_model = tiny_lora_model(tiny_model_dir, checkpointing=True)
    assert use_fused_lora(fused_model, CPU) == 14  # 7 linear layers in each of 2 layers
    got = lora_gradients(fused_model)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5, rtol=1e-4), name
