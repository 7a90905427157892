"""Every exported file is read back before it is called done.

Two checks. The file itself: tensor names, shapes and types, the architecture, the chat template and
stop tokens in the metadata (gguf's own reader). Then its answers: the file is loaded by a runtime
(llama.cpp through llama-cpp-python when installed, else transformers' GGUF loader, which dequantizes
the same tensors) and fed the run's own model's greedy answers to a few prompts, token by token; the
share of positions where its top token is the run's token is the agreement, and each quantization
has a floor below which the export fails. Both models' greedy answers are printed side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.export.gguf import ExportError, field_value

# Lowest top-1 agreement with the run's own model (teacher-forced on its greedy answers) an export may
# have. Measured on the demo run (SmolLM2-135M, 8 prompts x 32 tokens, 2026-12-01): f16 1.00,
# q8_0 0.99; a wrong tensor layout or tokenizer gives well under 0.5.
AGREEMENT_FLOOR = {"f32": 0.99, "f16": 0.97, "bf16": 0.95, "q8_0": 0.93, "q6_k": 0.9, "q5_k_m": 0.88,
                   "q4_k_m": 0.8, "q4_0": 0.75, "q3_k_m": 0.7}

DEFAULT_PROMPTS = (
    "Give me three tips for sleeping well.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Explain what a noun is.",
)


@dataclass
class FileCheck:
    architecture: str
    tensors: int
    types: dict[str, int]
    chat_template: str | None
    eos: int | None
    eot: int | None
    size_bytes: int


@dataclass
class AnswerCheck:
    runtime: str
    agreement: float
    positions: int
    same_tokenization: bool
    rows: list[dict] = field(default_factory=list)  # prompt, run's answer, export's answer

    @property
    def identical_answers(self) -> int:
        return sum(row["run"] == row["export"] for row in self.rows)


def read_gguf(path: Path) -> FileCheck:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    eos, eot = field_value(reader, "tokenizer.ggml.eos_token_id"), field_value(reader, "tokenizer.ggml.eot_token_id")
    return FileCheck(
        architecture=str(field_value(reader, "general.architecture")),
        tensors=len(reader.tensors),
        types=types,
        chat_template=field_value(reader, "tokenizer.chat_template"),
        eos=None if eos is None else int(eos),
        eot=None if eot is None else int(eot),
        size_bytes=path.stat().st_size,
    )


def check_model_file(path: Path, model_dir: Path, chat_template: str, stop_token_ids: tuple[int, ...]) -> FileCheck:
    """The file holds every layer of the model, the run's template and its stop tokens."""
    import json

    from gguf import GGUFReader

    found = read_gguf(path)
    config = json.loads((model_dir / "config.json").read_text())
    layers = config.get("num_hidden_layers") or config.get("text_config", {}).get("num_hidden_layers")
    names = {tensor.name for tensor in GGUFReader(path).tensors}
    blocks = {int(m.group(1)) for name in names if (m := re.match(r"blk\.(\d+)\.", name))}
    problems = []
    if layers and blocks != set(range(layers)):
        problems.append(f"layers {sorted(set(range(layers)) - blocks)} are missing")
    if "token_embd.weight" not in names:
        problems.append("no token embedding")
    if found.chat_template != chat_template:
        problems.append("the chat template differs from the run's")
    if not {found.eos, found.eot} & set(stop_token_ids):
        problems.append(f"none of the run's stop tokens {list(stop_token_ids)} is eos or eot")
    if problems:
        raise ExportError(f"{path}: read back wrong: {'; '.join(problems)}")
    return found


def check_adapter_file(path: Path, adapter_dir: Path) -> dict:
    """Every LoRA pair of the adapter is in the file, with the same low-rank product (B·A)."""
    from gguf import GGUFReader
    from safetensors.torch import load_file

    reader = GGUFReader(path)
    if field_value(reader, "general.type") != "adapter" or field_value(reader, "adapter.type") != "lora":
        raise ExportError(f"{path}: not marked as a LoRA adapter (general.type, adapter.type)")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for tensor in reader.tensors:
        stem, _, part = tensor.name.rpartition(".lora_")
        values = torch.from_numpy(tensor.data.astype("float32")).reshape([int(d) for d in reversed(tensor.shape)])
        pairs.setdefault(stem, {})[part] = values
    file_norms = sorted(float((p["b"] @ p["a"]).norm()) for p in pairs.values())
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    adapter_norms = sorted(float((weights[name.replace("lora_A", "lora_B")].float() @ weights[name].float()).norm())
                           for name in weights if "lora_A" in name)
    if len(file_norms) != len(adapter_norms):
        raise ExportError(f"{path}: {len(file_norms)} LoRA pairs, the adapter has {len(adapter_norms)}")
    worst = max((abs(a - b) / max(b, 1e-8) for a, b in zip(file_norms, adapter_norms)), default=0.0)
    if worst > 1e-2:
        raise ExportError(f"{path}: a LoRA product differs from the adapter's by {worst:.1%} (f16 rounds by < 0.1%)")
    return {"pairs": len(file_norms), "alpha": field_value(reader, "adapter.lora.alpha"), "worst_relative_difference": worst}


def compare_answers(path: Path, model_dir: Path, prompts: list[str], *, max_new_tokens: int = 32,
                    system_prompt: str | None = None) -> AnswerCheck:
    """Teacher-forced top-1 agreement of the file with the run's model, and both greedy answers."""
    from tunesmith.models.generate import generate, load_for_generation

    reference = load_for_generation(str(model_dir), precision="fp32")
    run_answers = generate(reference, list(prompts), max_new_tokens=max_new_tokens, system_prompt=system_prompt)
    from tunesmith.data.tokenize import encode_prompt
    from tunesmith.models.generate import _as_messages

    encoded = [encode_prompt(reference.tokenizer, reference.info, _as_messages(p, system_prompt)) for p in prompts]
    texts = [reference.tokenizer.decode(ids, skip_special_tokens=False) for ids in encoded]
    try:
        return _compare(_runtime(path), prompts, encoded, texts, run_answers, reference, max_new_tokens)
    except LlamaCppCrashed as crash:  # llama.cpp's own fault: the file is still checked, by transformers
        import warnings

        warnings.warn(f"{path.name}: {crash}; checked with transformers' GGUF loader instead", stacklevel=2)
        check = _compare(_Transformers(path), prompts, encoded, texts, run_answers, reference, max_new_tokens)
        check.runtime = f"{check.runtime} (llama.cpp crashed on this file: {crash.status})"
        return check


def _compare(runtime: Any, prompts: list[str], encoded: list[list[int]], texts: list[str], run_answers: Any,
             reference: Any, max_new_tokens: int) -> AnswerCheck:
    agree = total = 0
    same_tokens = True
    rows = []
    for prompt, ids, text, answer_ids, answer in zip(prompts, encoded, texts, run_answers.token_ids,
                                                      run_answers.texts):
        same_tokens &= runtime.tokenize(text, ids) == ids
        top = runtime.top_tokens(ids + answer_ids)[len(ids) - 1:len(ids) - 1 + len(answer_ids)]
        agree += sum(int(a == b) for a, b in zip(top, answer_ids))
        total += len(answer_ids)
        own = runtime.greedy(ids, max_new_tokens, set(reference.info.stop_token_ids))
        rows.append({"prompt": prompt, "run": answer,
                     "export": reference.tokenizer.decode(own, skip_special_tokens=True).strip()})
    return AnswerCheck(runtime.name, agree / max(total, 1), total, same_tokens, rows)


class _Transformers:
    """transformers' GGUF loader: dequantizes the file's tensors into its own model class."""

    name = "transformers GGUF loader"

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()

    def tokenize(self, text: str, ids: list[int]) -> list[int]:
        bos = self.tokenizer.bos_token_id
        prefix = [bos] if ids and bos is not None and ids[0] == bos and not text.startswith(self.tokenizer.bos_token or "\0") else []
        return prefix + self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def top_tokens(self, ids: list[int]) -> list[int]:
        return self.model(torch.tensor([ids])).logits[0].argmax(-1).tolist()

    @torch.no_grad()
    def greedy(self, ids: list[int], max_new_tokens: int, stops: set[int]) -> list[int]:
        out = self.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=list(stops), pad_token_id=next(iter(stops)))[0, len(ids):].tolist()
        return out[:next((n for n, t in enumerate(out) if t in stops), len(out))]


class _LlamaCpp:
    """llama.cpp itself, through llama-cpp-python: the runtime llama.cpp and Ollama users will have."""

    name = "llama.cpp (llama-cpp-python)"

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, logits_all=True, verbose=False, n_threads=None)

    def tokenize(self, text: str, ids: list[int]) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def top_tokens(self, ids: list[int]) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids)
        import numpy as np

        return np.asarray(self.llm.scores[: len(ids)]).argmax(-1).tolist()

    def greedy(self, ids: list[int], max_new_tokens: int, stops: set[int]) -> list[int]:
        self.llm.reset()
        out: list[int] = []
        for token in self.llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if token in stops or len(out) >= max_new_tokens:
                break
            out.append(token)
        return out


class LlamaCppCrashed(Exception):
    """llama.cpp's process died while running the file (llama-cpp-python 0.3.36 segfaults on the q8_0
    file of the tests' hidden-64 model, which transformers' loader reads and answers with)."""

    def __init__(self, exit_status: int | None) -> None:
        self.status = f"exit status {exit_status}" if exit_status is None or exit_status >= 0 else f"signal {-exit_status}"
        super().__init__(f"llama.cpp's process died running it ({self.status})")


class _LlamaCppProcess:
    """llama.cpp in a child process of its own. Its OpenMP runtime (the system's libgomp) and
    PyTorch's own copy in one process segfaulted llama.cpp's decode after a training had run there
    (tests/integration/test_export.py, in one pytest process); a crash of native code in the child
    is also an error here, not the end of the caller."""

    name = _LlamaCpp.name

    def __init__(self, path: Path) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._calls, child_end = context.Pipe()
        self._child = context.Process(target=_serve_llama_cpp, args=(str(path), child_end), daemon=True)
        self._child.start()
        child_end.close()

    def _call(self, method: str, *args: Any) -> Any:
        self._calls.send((method, args))
        try:
            ok, value = self._calls.recv()
        except EOFError:
            self._child.join()
            raise LlamaCppCrashed(self._child.exitcode) from None
        if not ok:
            raise ExportError(f"llama.cpp could not check the export: {value}")
        return value

    def tokenize(self, text: str, ids: list[int]) -> list[int]:
        return self._call("tokenize", text, ids)

    def top_tokens(self, ids: list[int]) -> list[int]:
        return self._call("top_tokens", ids)

    def greedy(self, ids: list[int], max_new_tokens: int, stops: set[int]) -> list[int]:
        return self._call("greedy", ids, max_new_tokens, stops)

    def __del__(self) -> None:
        if getattr(self, "_child", None) is not None and self._child.is_alive():
            self._child.kill()


def _serve_llama_cpp(path: str, calls: Any) -> None:
    """In the child: answer the parent's calls on one loaded model until the pipe closes."""
    import faulthandler

    faulthandler.enable()  # a crash of native code says where, in the parent's log
    try:
        runtime = _LlamaCpp(Path(path))
    except Exception as exc:
        runtime, failure = None, f"{type(exc).__name__}: {exc}"
    while True:
        try:
            method, args = calls.recv()
        except EOFError:
            return
        try:
            calls.send((True, getattr(runtime, method)(*args)) if runtime else (False, failure))
        except Exception as exc:
            calls.send((False, f"{type(exc).__name__}: {exc}"))


def _runtime(path: Path) -> Any:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return _Transformers(path)
    return _LlamaCppProcess(path)


def check_floor(check: AnswerCheck, quant: str, path: Path) -> None:
    floor = AGREEMENT_FLOOR.get(quant, 0.7)
    if check.agreement < floor or not check.same_tokenization:
        why = (f"its top token agrees with the run's model at {check.agreement:.1%} of {check.positions} positions "
               f"(at least {floor:.0%} expected for {quant})" if check.agreement < floor
               else "its tokenizer splits the prompts differently from the run's")
        raise ExportError(f"{path}: the export does not answer like the run: {why}; the file is kept as "
                          f"{path.with_suffix('.unverified.gguf').name} for inspection, do not ship it")
