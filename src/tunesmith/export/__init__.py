"""Take a run elsewhere: GGUF (llama.cpp), an Ollama folder, a llama.cpp LoRA, ONNX; each file read back.

    tunesmith export RUN --format gguf --quant q8_0
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.export.gguf import ExportError, ModelFiles, read_run

FORMATS = ("gguf", "ollama", "gguf-lora", "vllm", "onnx")
_CAUSAL_METHODS = {"sft", "pretrain", "dpo", "online-dpo"}


@dataclass
class ExportResult:
    format: str
    files: list[Path]
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"format": self.format, "files": [str(p) for p in self.files], **self.details}


def export_run(run_dir: str | Path, fmt: str, *, out_dir: str | Path | None = None, quant: str = "f16",
               verify: bool = True, prompts: list[str] | None = None, check_data: str | None = None) -> ExportResult:
    """Export one run; every file is read back (and its answers compared with the run's) before this returns."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: not an export format; choose one of {', '.join(FORMATS)}")
    files = read_run(Path(run_dir))
    target = Path(out_dir) if out_dir else files.run_dir / "export"
    target.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        from tunesmith.export.onnx import export_onnx

        return export_onnx(files, target, verify=verify, texts=_texts_of(files, check_data) if check_data else None)
    if files.method not in _CAUSAL_METHODS:
        raise ExportError(f"{files.run_dir}: a {files.method} run has a task head, which GGUF cannot hold; "
                          "export it with --format onnx")
    if fmt == "gguf-lora":
        return _export_lora(files, target)
    if fmt == "vllm":
        return _export_vllm(files, target)
    return _export_gguf(files, target, quant, verify=verify, prompts=prompts, ollama=fmt == "ollama")


def _texts_of(files: ModelFiles, data_spec: str) -> list[str]:
    """The texts of a data file's rows, read as `tunesmith predict` reads them."""
    from tunesmith.pipeline.folder import run_config
    from tunesmith.pipeline.predict import rows_to_predict, texts_to_classify

    source, examples = rows_to_predict(data_spec, run_config(files.run_dir).data)
    return texts_to_classify(source, examples)


def _export_gguf(files: ModelFiles, target: Path, quant: str, *, verify: bool, prompts: list[str] | None,
                 ollama: bool) -> ExportResult:
    from tunesmith.export.gguf import convert_model, merged_model_folder
    from tunesmith.export.verify import (
        DEFAULT_PROMPTS,
        check_floor,
        check_model_file,
        compare_answers,
    )
    from tunesmith.files import write_json_atomic

    out_file = target / f"{files.name}-{quant}.gguf"
    with tempfile.TemporaryDirectory(dir=target, prefix=".merge-") as scratch:
        model_dir = merged_model_folder(files, Path(scratch))
        tokenizer, stop_ids, system = _run_template(files, model_dir)
        print(f"tunesmith: writing {out_file} ({quant}) with llama.cpp's converter", flush=True)
        convert_model(model_dir, out_file, quant, stop_ids)
        check = check_model_file(out_file, model_dir, tokenizer.chat_template, stop_ids)
        details: dict[str, Any] = {"quant": quant, "size_bytes": check.size_bytes, "architecture": check.architecture,
                                   "tensors": check.tensors, "tensor_types": check.types, "eos": check.eos, "eot": check.eot}
        if verify:
            answers = compare_answers(out_file, model_dir, list(prompts or DEFAULT_PROMPTS), system_prompt=system)
            details["verification"] = {"runtime": answers.runtime, "agreement": round(answers.agreement, 4),
                                       "positions": answers.positions, "same_tokenization": answers.same_tokenization,
                                       "identical_answers": answers.identical_answers, "answers": answers.rows}
            _print_answers(answers)
            try:
                check_floor(answers, quant, out_file)
            except ExportError:
                # never left under the name of a finished export: a script would ship it
                out_file.rename(out_file.with_suffix(".unverified.gguf"))
                raise
        written = [out_file]
        if ollama:
            written.append(_write_modelfile(files, target, out_file, tokenizer, stop_ids, system, details))
    write_json_atomic(target / "export.json", {"run": str(files.run_dir), **details, "files": [str(p) for p in written]})
    return ExportResult("ollama" if ollama else "gguf", written, details)


def _export_lora(files: ModelFiles, target: Path) -> ExportResult:
    from tunesmith.export.gguf import convert_adapter
    from tunesmith.export.lint import lint_adapter
    from tunesmith.export.verify import check_adapter_file
    from tunesmith.files import write_json_atomic
    from tunesmith.models.load import resolve_model

    if files.adapter_dir is None:
        raise ExportError(f"{files.run_dir}: not a LoRA run (no adapter/); export the whole model with --format gguf")
    problems = lint_adapter(files.adapter_dir, target="llama.cpp")
    if problems:
        raise ExportError(f"{files.adapter_dir}: {'; '.join(problems)}")
    out_file = target / f"{files.name}-lora-f16.gguf"
    base_dir = Path(resolve_model(files.base).location)
    print(f"tunesmith: writing {out_file} (LoRA, f16) with llama.cpp's converter", flush=True)
    convert_adapter(files.adapter_dir, base_dir, out_file)
    details = {"lora": check_adapter_file(out_file, files.adapter_dir), "base": files.base,
               "size_bytes": out_file.stat().st_size}
    print(f"tunesmith: read back {details['lora']['pairs']} LoRA pairs, products within "
          f"{details['lora']['worst_relative_difference']:.2%} of the adapter's; use with llama.cpp's "
          f"--lora {out_file.name} on a GGUF of {files.base}", flush=True)
    write_json_atomic(target / "export.json", {"run": str(files.run_dir), "format": "gguf-lora", **details,
                                               "files": [str(out_file)]})
    return ExportResult("gguf-lora", [out_file], details)


def _export_vllm(files: ModelFiles, target: Path) -> ExportResult:
    """The PEFT adapter as vLLM loads it (`--enable-lora --lora-modules NAME=FOLDER`), after the lint."""
    from tunesmith.export.lint import lint_adapter, vllm_notes
    from tunesmith.files import write_atomic, write_json_atomic

    if files.adapter_dir is None:
        raise ExportError(f"{files.run_dir}: not a LoRA run (no adapter/); vLLM serves its model/ folder as it is")
    problems = lint_adapter(files.adapter_dir, target="vllm")
    if problems:
        raise ExportError(f"{files.adapter_dir}: vLLM would refuse it: {'; '.join(problems)}")
    folder = target / f"{files.name}-vllm"
    staging = target / f".{folder.name}.partial"
    remove_partial(staging)
    shutil.copytree(files.adapter_dir, staging)
    notes = vllm_notes(files.adapter_dir)
    flags = " ".join(f"--max-lora-rank {n.split('--max-lora-rank ')[1]}" for n in notes if "--max-lora-rank" in n)
    command = f"vllm serve {files.base} --enable-lora --lora-modules {files.name}={folder.resolve()} {flags}".strip()
    write_atomic(staging / "README.md", f"# {files.name} for vLLM\n\n    {command}\n\nThen ask for model "
                 f"`{files.name}` through any OpenAI client.\n")
    remove_partial(folder)
    staging.rename(folder)
    for note in notes:
        print(f"tunesmith: {note}", flush=True)
    print(f"tunesmith: {folder} passes vLLM's adapter rules; serve it with: {command}", flush=True)
    details = {"base": files.base, "command": command, "notes": notes}
    write_json_atomic(target / "export.json", {"run": str(files.run_dir), "format": "vllm", **details, "files": [str(folder)]})
    return ExportResult("vllm", [folder], details)


def _run_template(files: ModelFiles, model_dir: Path) -> tuple[Any, tuple[int, ...], str | None]:
    """The tokenizer (with the chat template training used), the stop tokens and the system prompt."""
    import json

    from transformers import AutoTokenizer

    from tunesmith.config import load_config
    from tunesmith.data.template import analyze_template, ensure_chat_template

    config = load_config(files.run_dir / "config.yaml")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer, None)
    generation = json.loads((model_dir / "generation_config.json").read_text()) if (model_dir / "generation_config.json").is_file() else {}
    info = analyze_template(tokenizer, generation.get("eos_token_id"))
    return tokenizer, info.stop_token_ids, config.data.system_prompt


def _write_modelfile(files: ModelFiles, target: Path, gguf_file: Path, tokenizer: Any, stop_ids: tuple[int, ...],
                     system: str | None, details: dict[str, Any]) -> Path:
    from tunesmith.data.template import render
    from tunesmith.export.ollama import check_parts, derive_parts, write_ollama

    def template(messages: list, generation: bool) -> str:
        return render(tokenizer, messages, add_generation_prompt=generation)

    parts = derive_parts(template)
    details["template_check"] = check_parts(parts, template, system)
    stops = [tokenizer.convert_ids_to_tokens(token) for token in stop_ids]
    path = write_ollama(target, gguf_file.name, parts, stops, system, files.name)
    print(f"tunesmith: wrote {path} (template checked on {len(details['template_check'])} conversations; "
          f"stop {', '.join(stops)}); then: ollama create {files.name} -f {path}", flush=True)
    return path


def _print_answers(answers: Any) -> None:
    print(f"tunesmith: {answers.runtime}: top-token agreement with the run's model {answers.agreement:.1%} over "
          f"{answers.positions} positions; {answers.identical_answers} of {len(answers.rows)} greedy answers identical",
          flush=True)
    for row in answers.rows:
        mark = "=" if row["run"] == row["export"] else "≠"
        print(f"  {mark} {row['prompt'][:50]!r}\n      run:    {row['run'][:100]!r}\n      export: {row['export'][:100]!r}",
              flush=True)


def remove_partial(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
