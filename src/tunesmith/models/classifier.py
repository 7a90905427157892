"""Classification heads: the logits of a batch (for training and inference alike), and inference
with a trained head (label probabilities for texts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.errors import ModelError
from tunesmith.models.device import attention_kernel, resolve_device
from tunesmith.models.generate import pad_rows
from tunesmith.models.load import ModelSource, _first_line, load_tokenizer
from tunesmith.models.processes import ALONE, Share


@dataclass
class Classifier:
    model: Any
    tokenizer: Any
    labels: list[str]
    name: str
    max_length: int = 512  # longest input in tokens: the run's data.max_length, so predictions see what training saw
    share: Share = ALONE  # the processes that classify with it together (evaluation after a run on several)


def classifier_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[rows, labels] logits of right-padded rows, each read at the last token its mask attends to.

    transformers' heads on causal LMs (every one named `score`) read the last token that is not
    `config.pad_token_id` and ignore the mask: padding with another id, or a text that ends in that
    token, moves the read to a padding column or an earlier token, and a row's label depends on its
    batch. So the body runs as in the head's own forward and the head reads where each mask ends.
    Encoder heads (BERT's `classifier`) read the first token, which right padding never moves."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft wrapper
    score = getattr(inner, "score", None)
    if score is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    body = getattr(inner, inner.base_model_prefix)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    columns = torch.arange(input_ids.shape[1], device=attention_mask.device)
    last = (columns * attention_mask).argmax(dim=1).to(hidden.device)
    return score(hidden[torch.arange(len(last), device=hidden.device), last])


def position_limit(model: Any) -> int | None:
    """The most tokens one row may hold: the rows of a learned position table (BERT, GPT-2), less
    the ones RoBERTa-style models reserve below their pad id; None for rotary positions (no table)."""
    config = model.config.get_text_config()
    if getattr(config, "rope_parameters", None) is not None or not getattr(config, "max_position_embeddings", None):
        return None
    limit = config.max_position_embeddings
    for name, module in model.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
            return min(limit, module.num_embeddings - module.padding_idx - 1)  # positions start after the pad id
    return limit


def load_classifier(target: str, share: Share = ALONE) -> Classifier:
    """A run folder's (or model folder's) sequence classifier, in fp32 for stable probabilities."""
    from transformers import AutoModelForSequenceClassification

    model, tokenizer, max_length = load_trained_head(target, AutoModelForSequenceClassification, "classify")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return Classifier(model, tokenizer, labels, str(target), max_length, share)


HEAD_NAMES = {"classify": "classification head", "token-classify": "token-classification head",
              "extractive-qa": "question-answering head"}


def load_trained_head(target: str, auto_class: Any, method: str) -> tuple[Any, Any, int]:
    """The model under a trained task head (auto_class, e.g. AutoModelForTokenClassification) in a
    run folder (its model/) or a model folder, in fp32 on the best device; its tokenizer; and the
    longest input the run trained with."""
    from transformers import AutoConfig

    path = Path(target)
    folder = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        hint = ("this LoRA run kept only its adapter; train it again with output.save_merged=true"
                if (path / "adapter").is_dir() else f"give the run folder of a train.method={method} run")
        raise ModelError(f"{target}: no model folder with config.json; {hint}")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: config.json could not be read ({_first_line(exc)}); "
                         f"give the run folder of a train.method={method} run, or train it again") from exc
    architectures = config.architectures or []
    suffix = auto_class.__name__.removeprefix("AutoModel")
    if not any(name.endswith(suffix) for name in architectures):
        raise ModelError(f"{folder}: holds a {', '.join(architectures) or config.model_type} model, not a "
                         f"{HEAD_NAMES[method]}; give the run folder of a train.method={method} run")
    try:
        model = auto_class.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: the model could not be loaded ({_first_line(exc)}); "
                         f"train it again with train.method={method}") from exc
    model = model.to(resolve_device("auto")).eval()
    tokenizer = load_tokenizer(ModelSource(target, "folder", str(folder)))
    return model, tokenizer, _trained_max_length(path)


def _trained_max_length(run_dir: Path) -> int:
    """The run's data.max_length (config.yaml), else the default 512."""
    import yaml

    try:
        settings = yaml.safe_load((run_dir / "config.yaml").read_text())
        return int(settings["data"]["max_length"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return 512


@torch.no_grad()
def predict_probabilities(classifier: Classifier, texts: list[str], *, batch_size: int = 32,
                          max_length: int | None = None) -> np.ndarray:
    """[rows, labels] probabilities; rows are batched by length, right-padded with an attention mask,
    and cut at `max_length` tokens (default: what the run trained with) or the model's positions,
    whichever is fewer. The batches are shared out over `classifier.share`'s processes."""
    max_length = max_length or classifier.max_length
    limit = position_limit(classifier.model)
    max_length = min(max_length, limit) if limit is not None else max_length
    encoded = classifier.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    probabilities = np.zeros((len(texts), len(classifier.labels)), dtype=np.float32)
    device = next(classifier.model.parameters()).device
    pad_id = classifier.tokenizer.pad_token_id
    found: dict[int, np.ndarray] = {}  # row -> its probabilities
    for chunk in classifier.share.take([order[start:start + batch_size] for start in range(0, len(order), batch_size)]):
        input_ids, attention = pad_rows([encoded[i] for i in chunk], pad_id, left=False)
        with attention_kernel(device, input_ids.shape[1]):
            logits = classifier_logits(classifier.model, input_ids.to(device), attention.to(device))
        found.update(zip(chunk, torch.softmax(logits.float(), dim=-1).cpu().numpy()))
    for row, values in classifier.share.gather(found).items():
        probabilities[row] = values
    return probabilities
