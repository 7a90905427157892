"""Find a base model from what the user wrote, and load its tokenizer and weights."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from tunesmith.assets import cache_dir
from tunesmith.errors import ModelError
from tunesmith.models.catalog import CATALOG, materialize

_LOCAL_HINT = "pass a local folder or .gguf file with --model PATH, or a catalog name (tunesmith models)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a local folder (also for catalog names and .gguf files) or the hub."""

    spec: str
    kind: Literal["catalog", "folder", "gguf", "hub"]
    location: str

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"


def resolve_model(spec: str) -> ModelSource:
    """Turn a model name, folder, .gguf file or hub id into a loadable location (no weights read)."""
    if spec in CATALOG:
        return ModelSource(spec, "catalog", str(materialize(spec)))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{spec}: no such .gguf file; check the path")
        return ModelSource(spec, "gguf", str(_materialize_gguf(path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{spec}: folder has no config.json, so it is not a Hugging Face model folder; "
                "point --model at the folder that holds config.json and the weights"
            )
        return ModelSource(spec, "folder", str(path.resolve()))
    if path.exists():
        raise ModelError(f"{spec}: not a model folder or a .gguf file")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSource(spec, "hub", spec)
    known = ", ".join(sorted(CATALOG))
    raise ModelError(
        f"{spec}: not a catalog name ({known}), an existing folder or .gguf file, or a hub id "
        "(owner/name); check the spelling or the path"
    )


def load_tokenizer(source: ModelSource, *, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = _from_hub_or_local(
        AutoTokenizer.from_pretrained, source, revision=revision, trust_remote_code=trust_remote_code
    )
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"{source.spec}: tunesmith needs a fast (Rust) tokenizer to map tokens to characters; "
            "this model only has a slow one, save it with tokenizer.json first"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    source: ModelSource,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
    dtype: Any = None,
    quantization: str = "none",
) -> Any:
    """The causal LM in `dtype` (fp32 by default); with quantization='4bit', its linear layers in NF4
    (bitsandbytes), computed in `dtype`, everything else (embeddings, norms, the output head) in `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.models.device import contiguous_output_head

    quantized = {"quantization_config": four_bit_config(dtype or torch.float32)} if quantization == "4bit" else {}
    model = _from_hub_or_local(
        AutoModelForCausalLM.from_pretrained,
        source,
        revision=revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
        dtype=dtype or torch.float32,
        **quantized,
    )
    model = contiguous_output_head(model)
    return unmapped(keep_4bit_differentiable(model)) if quantized else model


def unmapped(model: Any) -> Any:
    """The weights that 4 bits leave in the checkpoint's dtype (embeddings, norms, the output head) in
    memory of their own. Where that dtype is the file's, transformers hands them out as views of the
    file mapped in memory, which keeps the whole file mapped, and every page the quantization read
    stays resident: a 7B model in 4 bits held 7.1 GB of its bf16 file besides its 5.2 GB, which
    gradient_checkpointing=auto counted as memory in use (it is page cache). A copy of 2.2 GB frees it."""
    for parameter in model.parameters():
        if type(parameter).__name__ != "Params4bit":
            parameter.data = parameter.data.clone()
    return model


def keep_4bit_differentiable(model: Any) -> Any:
    """bitsandbytes (0.50) repacks a 4-bit layer's weights for its AVX512-BF16 CPU kernel the first time
    the layer runs in eval mode without gradients (a validation pass), for good, and that kernel has no
    backward: every later training step then gets no gradient through the base weights, silently (the
    adapters of all but the last layer train on wrong gradients). Each layer is told the CPU lacks the
    kernel, so it keeps the layout that dequantizes and differentiates (tests/integration/test_quantize.py)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


_BNB_FLOOR = "0.47"  # the first bitsandbytes whose 4-bit kernels run on x86 CPUs
_QUANTIZE_HINT = "pip install 'tunesmith[quantize]'"


def four_bit_config(compute_dtype: Any) -> Any:
    """QLoRA's storage (Dettmers et al. 2023): NF4 in blocks of 64 weights, the blocks' scales quantized
    again (nested, about 0.03 bytes a weight saved). A clear error where bitsandbytes is missing, too
    old, or has no backend on this machine."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version
    from transformers import BitsAndBytesConfig

    try:
        installed = version("bitsandbytes")
    except PackageNotFoundError:
        raise ModelError(f"model.quantization=4bit needs bitsandbytes: {_QUANTIZE_HINT}") from None
    if Version(installed) < Version(_BNB_FLOOR):
        raise ModelError(f"model.quantization=4bit: bitsandbytes {installed} has no 4-bit kernels for CPUs "
                         f"(from {_BNB_FLOOR}): {_QUANTIZE_HINT} --upgrade")
    from transformers.integrations import validate_bnb_backend_availability

    try:
        validate_bnb_backend_availability(raise_exception=True)
    except Exception as exc:
        raise ModelError(f"model.quantization=4bit: bitsandbytes {installed} cannot run on this machine "
                         f"({_first_line(exc)}); set model.quantization=none") from exc
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage="uint8")


def load_sequence_classifier(
    source: ModelSource,
    labels: list[str],
    *,
    pad_token_id: int | None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
    dtype: Any = None,
) -> Any:
    """The model with transformers' sequence-classification head for `labels` (new, untrained).
    `pad_token_id` is the id batches are padded with (the tokenizer's)."""
    from transformers import AutoModelForSequenceClassification

    model = load_with_head(AutoModelForSequenceClassification, source, labels, revision=revision,
                           trust_remote_code=trust_remote_code, attn_implementation=attn_implementation, dtype=dtype)
    if hasattr(model, "score") and pad_token_id is not None:
        # transformers' heads on causal LMs (all named `score`) read the last token that is not the
        # config's pad id: make it the id batches are padded with, so the saved model/ folder reads
        # right-padded batches right in plain transformers too (tunesmith reads by the attention mask).
        model.config.get_text_config().pad_token_id = pad_token_id
    return model


def load_with_head(auto_class: Any, source: ModelSource, labels: list[str] | None, *, pad_token_id: int | None = None,
                   revision: str | None = None, trust_remote_code: bool = False, attn_implementation: str = "sdpa",
                   dtype: Any = None) -> Any:
    """The model under one of transformers' task heads (`auto_class`, e.g.
    AutoModelForTokenClassification), the head new and untrained; with `labels`, their map saved in
    the model's config (id2label / label2id); with `pad_token_id`, the config's pad id set to it."""
    import torch

    named = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
             "label2id": {label: i for i, label in enumerate(labels)}} if labels else {}
    model = _from_hub_or_local(auto_class.from_pretrained, source, revision=revision, trust_remote_code=trust_remote_code,
                               attn_implementation=attn_implementation, dtype=dtype or torch.float32, **named)
    if pad_token_id is not None:
        model.config.get_text_config().pad_token_id = pad_token_id
    return model


def _from_hub_or_local(loader: Any, source: ModelSource, **kwargs: Any) -> Any:
    if source.is_local:
        kwargs.pop("revision", None)
        try:
            return loader(source.location, **kwargs)
        except Exception as exc:  # every failure of a local load becomes one line naming its real cause
            raise load_error(source.spec, exc) from exc
    if not _hub_reachable():
        # Offline: the hub client would retry for about a minute; a copy in the local Hugging Face
        # cache still loads, anything else fails at once.
        try:
            with _hub_client_offline():
                return loader(source.location, local_files_only=True, **kwargs)
        except Exception as exc:
            if not _not_in_cache(exc):
                raise load_error(source.spec, exc) from exc
            raise ModelError(
                f"{source.spec}: the Hugging Face Hub is unreachable from this machine and the model "
                f"is not in the local Hugging Face cache; {_LOCAL_HINT}"
            ) from exc
    try:
        return loader(source.location, **kwargs)
    except Exception as exc:
        raise _hub_error(source.spec, exc) from exc


@contextlib.contextmanager
def _hub_client_offline() -> Iterator[None]:
    """The hub client in offline mode for the call: transformers' look for an adapter config ignores
    local_files_only, and the client retried that one request for 27 s (5 times, a warning each) before
    the one line said the hub was unreachable."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def _hub_reachable(timeout_s: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _not_in_cache(exc: BaseException) -> bool:
    """The local-files-only load failed because the files are not there (not for another reason)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(words in text for words in (
        "couldn't find them in the cached files", "LocalEntryNotFound", "local_files_only", "Cannot find the requested files",
        "does not appear to have a file named", "is not a local folder and is not a valid model identifier"))


def _hub_error(hub_id: str, exc: Exception) -> ModelError:
    text = f"{type(exc).__name__}: {exc}"
    hint = _LOCAL_HINT
    if any(word in text for word in ("RepositoryNotFound", "is not a local folder and is not a valid model identifier", "404")):
        return ModelError(f"{hub_id}: no such model on the Hugging Face Hub; check the id, or {hint}")
    if "Gated" in text or "401" in text or "403" in text:
        return ModelError(f"{hub_id}: the hub refused access (gated or private); log in with `hf auth login`, or {hint}")
    if any(word in text for word in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Max retries", "couldn't connect",
                                     "Temporary failure in name resolution", "Network is unreachable")):
        return ModelError(f"{hub_id}: the Hugging Face Hub is unreachable from this machine ({_first_line(exc)}); {hint}")
    return load_error(hub_id, exc)


def load_error(spec: str, exc: BaseException) -> ModelError:
    """One line naming why a model could not be loaded, and what to do about it."""
    import transformers

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "OutOfMemory" in text:
        return ModelError(f"{spec}: not enough memory to load the model ({_first_line(exc)}); use a smaller model, "
                          "LoRA (lora.enabled=true) with train.precision=bf16, or a machine with more memory")
    if "trust_remote_code" in text:
        return ModelError(f"{spec}: the model needs Python code shipped with it; set model.trust_remote_code=true "
                          "only if you trust its author")
    if "does not recognize this architecture" in text or "Unrecognized configuration class" in text \
            or "Unrecognized model" in text:
        return ModelError(f"{spec}: transformers {transformers.__version__} does not support this model's architecture "
                          f"({_first_line(exc)}); upgrade transformers, or pick a supported model")
    if "SafetensorError" in text or "header" in text.lower() and "safetensors" in text.lower():
        return ModelError(f"{spec}: a weights file is damaged or incomplete ({_first_line(exc)}); download or save "
                          "the model again")
    return ModelError(f"{spec}: could not be loaded ({type(exc).__name__}: {_first_line(exc)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _materialize_gguf(path: Path) -> Path:
    from tunesmith.models.gguf import convert_gguf

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir() / "models" / f"gguf-{path.stem}-{key}"
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(path, folder)
    return folder


def generation_eos(source: ModelSource) -> Any:
    """The eos_token_id(s) in the model's generation_config.json, if it has one locally."""
    if not source.is_local:
        return None
    path = Path(source.location) / "generation_config.json"
    if not path.is_file():
        return None
    import json

    return json.loads(path.read_text()).get("eos_token_id")
