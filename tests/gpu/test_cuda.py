"""The GPU path (bf16 autocast on CUDA): `pytest -m gpu` on a machine with a CUDA device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tunesmith
from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_lora_run_on_cuda_with_bf16_autocast(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(32))
    result = tunesmith.train(tiny_config(tmp_path, tiny_model_dir, data, "train.max_steps=8", "train.device=cuda"),
                             show_progress=False)
    assert result.val_loss < result.baseline_val_loss
    assert (result.run_dir / "model" / "model.safetensors").is_file()
