"""ONNX for classifier runs: the model with its head, read where `tunesmith predict` reads it.

The graph is the same forward as inference (models/classifier.classifier_logits: a causal LM's head
reads the last token the mask attends to, an encoder's the first), so ONNX Runtime's probabilities
equal `tunesmith predict`'s; the export checks that on rows of different lengths in one batch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.export.gguf import ExportError, ModelFiles

SAMPLE_TEXTS = ("a tender, funny and wise film.", "dull.", "the plot goes nowhere and the actors seem to know it, "
                "but the score is lovely and the last ten minutes almost redeem the whole thing.", "an ok movie")


class _Logits(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from tunesmith.models.classifier import classifier_logits

        return classifier_logits(self.model, input_ids, attention_mask)


def export_onnx(files: ModelFiles, target: Path, *, verify: bool = True, texts: list[str] | None = None) -> Any:
    from tunesmith.export import ExportResult
    from tunesmith.files import write_json_atomic
    from tunesmith.models.classifier import load_classifier, predict_probabilities

    if files.method != "classify":
        raise ExportError(f"{files.run_dir}: ONNX export is for train.method=classify runs, this is {files.method}; "
                          "export a generative run with --format gguf")
    _need_onnx()
    classifier = load_classifier(str(files.run_dir))
    classifier.model.to("cpu").float().eval()
    folder = target / f"{files.name}-onnx"
    staging = target / f".{folder.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    sample = classifier.tokenizer(list(SAMPLE_TEXTS[:2]), padding=True, return_tensors="pt")
    print(f"tunesmith: writing {folder}/model.onnx", flush=True)
    _export_graph(_Logits(classifier.model).eval(), sample["input_ids"], sample["attention_mask"], staging / "model.onnx")
    classifier.tokenizer.save_pretrained(staging)
    labels = {"id2label": {str(i): label for i, label in enumerate(classifier.labels)}, "max_length": classifier.max_length,
              "inputs": ["input_ids", "attention_mask"], "output": "logits (softmax gives the probabilities)",
              "padding": "right"}
    write_json_atomic(staging / "labels.json", labels)
    details: dict[str, Any] = {"labels": classifier.labels}
    if verify:
        rows = list(texts or SAMPLE_TEXTS)
        expected = predict_probabilities(classifier, rows)
        got = onnx_probabilities(staging, rows)
        worst = float(np.abs(expected - got).max())
        same = int((expected.argmax(1) == got.argmax(1)).sum())
        details["verification"] = {"runtime": "onnxruntime", "rows": len(rows), "same_labels": same,
                                   "max_probability_difference": worst}
        print(f"tunesmith: onnxruntime gives the same label as tunesmith predict for {same} of {len(rows)} rows; "
              f"largest probability difference {worst:.2e}", flush=True)
        if same != len(rows) or worst > 1e-3:
            raise ExportError(f"{staging}: ONNX Runtime's probabilities differ from tunesmith predict's by {worst:.2e} "
                              f"({same} of {len(rows)} labels the same); the export is left in {staging.name}")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    write_json_atomic(target / "export.json", {"run": str(files.run_dir), "format": "onnx", **details,
                                               "files": [str(folder / "model.onnx")]})
    return ExportResult("onnx", [folder / "model.onnx"], details)


def onnx_probabilities(folder: Path, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
    """[rows, labels] probabilities from an exported folder through ONNX Runtime, batched as predict batches."""
    import onnxruntime
    from transformers import AutoTokenizer

    from tunesmith.models.generate import pad_rows

    settings = json.loads((folder / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=settings["max_length"])["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    result = np.zeros((len(texts), len(settings["id2label"])), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        input_ids, attention = pad_rows([encoded[i] for i in chunk], tokenizer.pad_token_id, left=False)
        (logits,) = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention.numpy()})
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        result[chunk] = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def _export_graph(module: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, path: Path) -> None:
    # The TorchScript exporter: one call, no onnxscript, and it traces the same eager forward that
    # predict runs (attention in the math kernel, so the graph holds no fused-kernel call).
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        torch.onnx.export(module, (input_ids, attention_mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                        "logits": {0: "batch"}})


def _need_onnx() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}; pip install 'tunesmith[export]'")
