"""A resume on another number of processes: allowed when a step keeps its rows and draws no random
numbers, refused in one line naming the numbers and the fix otherwise."""

from pathlib import Path

import pytest
import torch

from tunesmith.errors import ConfigError
from tunesmith.training.checkpoint import TrainState
from tunesmith.training.resume import check_resume_randomness, check_resume_shape, random_draw

RUN = Path("runs/r")


def test_the_same_rows_a_step_resume_on_any_number_of_processes():
    check_resume_shape(RUN, TrainState(processes=2, batch_size=4), batch_size=8, count=1)
    check_resume_shape(RUN, TrainState(processes=1, batch_size=4), batch_size=1, count=4)
    check_resume_shape(RUN, TrainState(processes=2, batch_size=None), batch_size=4, count=2)  # an older checkpoint


def test_other_rows_a_step_are_refused_with_the_batch_size_that_fits():
    with pytest.raises(ConfigError) as refused:
        check_resume_shape(RUN, TrainState(processes=2, batch_size=2), batch_size=2, count=4)
    assert str(refused.value) == ("runs/r: this run's steps have 4 rows a micro-batch (2 processes x train.batch_size=2), "
                                  "resuming with 4 x 2 would have 8; resume with --nproc 2 and train.batch_size=2, or "
                                  "set train.batch_size=1 so that 4 x 1 = 4")
    with pytest.raises(ConfigError, match=r"resume with --nproc 2 and train.batch_size=2 \(4 rows do not divide among 3"):
        check_resume_shape(RUN, TrainState(processes=2, batch_size=2), batch_size=2, count=3)
    with pytest.raises(ConfigError, match="have 4 rows a micro-batch .2 processes x train.batch_size=2., resuming with 1 x 2"):  # no batch size recorded: its own kept
        check_resume_shape(RUN, TrainState(processes=2, batch_size=None), batch_size=2, count=1)


def test_dropout_keeps_a_resume_on_its_own_number_of_processes():
    quiet = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.0))
    noisy = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    assert random_draw(quiet) is None and random_draw(noisy) == "dropout p=0.1 in 1"
    check_resume_randomness(RUN, TrainState(processes=2), quiet, count=1)
    check_resume_randomness(RUN, TrainState(processes=2), noisy, count=2)
    with pytest.raises(ConfigError) as refused:
        check_resume_randomness(RUN, TrainState(processes=2), noisy, count=1)
    assert str(refused.value).startswith("runs/r: this run trained on 2 processes, each drawing its own random numbers "
                                         "(dropout p=0.1 in 1), which 1 process cannot replay; resume with --nproc 2")


def test_attention_dropout_counts_as_a_draw():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, attention_dropout=0.1)
    assert random_draw(LlamaForCausalLM(config)) == "attention dropout p=0.1 in model.layers.0.self_attn"
    assert random_draw(LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), "attention_dropout": 0.0}))) is None
