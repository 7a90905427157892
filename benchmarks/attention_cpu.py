"""Causal attention on CPU, forward + backward: tunesmith's blocked kernel (models/attention.py)
against PyTorch's SDPA flash and math kernels, the ones transformers' "sdpa" runs, in one run.

Shapes are a training batch's: 4 rows, the query heads sharing key/value heads as SmolLM2-135M has
them (9 and 3, head size 64), bf16, widths 80-1024 tokens. Printed per width: the median of 7
timings of each kernel (interleaved), tunesmith's speed-up over the faster SDPA kernel, and each
kernel's error against an fp64 computation (relative Frobenius norm of the output and of the
query, key and value gradients). Queries and keys are drawn at twice unit scale, so scores reach
the ~10-20 of trained models' attention logits.

    python benchmarks/attention_cpu.py [--widths 80 256 512] [--heads 9 --kv-heads 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tunesmith.models.attention import block_causal_attention

KERNELS = ("flash", "math", "tunesmith")


def inputs(batch: int, heads: int, kv_heads: int, width: int, size: int, seed: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(seed)

    def draw(count: int, spread: float) -> torch.Tensor:  # laid out as a model makes them: [B, L, H, D]
        values = torch.randn(batch, width, count, size, generator=generator) * spread
        return values.to(dtype).transpose(1, 2).requires_grad_()

    return draw(heads, 2.0), draw(kv_heads, 2.0), draw(kv_heads, 1.0), \
        torch.randn(batch, heads, width, size, generator=generator).to(dtype)


def run(kernel: str, query, key, value, grad_out):
    for tensor in (query, key, value):
        tensor.grad = None
    if kernel == "tunesmith":
        out = block_causal_attention(query, key, value).transpose(1, 2)
    else:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION if kernel == "flash" else SDPBackend.MATH):
            out = F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
    out.backward(grad_out)
    return [out.detach(), query.grad, key.grad, value.grad]


def exact(query, key, value, grad_out):
    leaves = [t.detach().double().requires_grad_() for t in (query, key, value)]
    out = F.scaled_dot_product_attention(*leaves, is_causal=True, enable_gqa=True)
    out.backward(grad_out.double())
    return [out.detach()] + [t.grad for t in leaves]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", nargs="+", type=int, default=[80, 160, 256, 360, 512, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    error_format = ".4f" if dtype == torch.bfloat16 else ".1e"  # fp32's errors are ~1e-7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.batch} rows, {args.heads} query heads "
          f"on {args.kv_heads} key/value heads of {args.head_size}, {args.dtype}, causal, forward + backward")
    print(f"{'width':>6}" + "".join(f"{k + ' ms':>15}" for k in KERNELS) + f"{'speed-up':>10}   "
          + "   ".join(f"{k} error (out dq dk dv)" for k in KERNELS))
    for width in args.widths:
        tensors = inputs(args.batch, args.heads, args.kv_heads, width, args.head_size, seed=width, dtype=dtype)
        reference = exact(*tensors)
        errors = {}
        for kernel in KERNELS:
            got = run(kernel, *tensors)
            errors[kernel] = " ".join(f"{((g.double() - r).norm() / r.norm()).item():{error_format}}"
                                      for g, r in zip(got, reference))
        times: dict[str, list[float]] = {kernel: [] for kernel in KERNELS}
        for _ in range(args.repeats):
            for kernel in KERNELS:
                start = time.perf_counter()
                run(kernel, *tensors)
                times[kernel].append(time.perf_counter() - start)
        medians = {kernel: statistics.median(values) * 1e3 for kernel, values in times.items()}
        speed_up = min(medians["flash"], medians["math"]) / medians["tunesmith"]
        print(f"{width:>6}" + "".join(f"{medians[k]:>15.2f}" for k in KERNELS) + f"{speed_up:>9.2f}x   "
              + "   ".join(errors[k] for k in KERNELS))


if __name__ == "__main__":
    main()
