"""The space file maps onto settings; unknown paths and malformed ranges are refused with a fix."""

from __future__ import annotations

import pytest

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError
from tunesmith.tune.space import apply_values, parse_space


def test_space_entries_become_params_and_values_land_on_the_settings():
    space = parse_space({
        "train.learning_rate": {"float": [1.0e-5, 1.0e-3], "log": True},
        "lora.rank": {"choice": [4, 8, 16, 32]},
        "train.epochs": {"float": [0.5, 3]},
        "train.max_steps": {"int": [10, 50], "step": 10},
        "model.name": {"choice": ["smollm2-135m-instruct", "other"]},
        "objective": {"metric": "macro_f1"},
    })
    assert [p.path for p in space.params] == ["train.learning_rate", "lora.rank", "train.epochs", "train.max_steps", "model.name"]
    assert space.params[0].log and space.params[1].choices == (4, 8, 16, 32)
    assert space.objective.metric == "macro_f1" and space.objective.direction == "maximize"
    grid = parse_space({"train.max_steps": {"int": [10, 50], "step": 10}, "lora.rank": {"choice": [4, 8]}}).grid()
    assert grid == {"train.max_steps": [10, 20, 30, 40, 50], "lora.rank": [4, 8]}
    with pytest.raises(ConfigError, match="grid sampler needs `step`"):
        space.grid()
    config = apply_values(RunConfig(), {"train.learning_rate": 3e-4, "lora.rank": 4, "train.epochs": 1.5})
    assert (config.train.learning_rate, config.lora.rank, config.train.epochs) == (3e-4, 4, 1.5)
    assert config.data == RunConfig().data  # nothing else moved


def test_an_unknown_setting_path_is_refused_with_the_closest_one():
    with pytest.raises(ConfigError, match=r"unknown setting 'train.learning_rte'; did you mean 'train.learning_rate'"):
        parse_space({"train.learning_rte": {"float": [1e-5, 1e-3]}})
    with pytest.raises(ConfigError, match=r"did you mean 'lora.rank'"):
        parse_space({"lora.rnak": {"choice": [4, 8]}})


def test_malformed_entries_are_all_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        parse_space({"train.learning_rate": {"float": [1e-3, 1e-5]}, "lora.rank": {"choice": []},
                     "train.epochs": {"float": [0.5, 3], "lgo": True}, "objective": {"metric": "macro-f1"}})
    message = str(caught.value)
    assert "low <= high" in message and "choice needs a list" in message
    assert "unknown option 'lgo'; did you mean 'log'" in message and "did you mean 'macro_f1'" in message


def test_a_value_out_of_range_is_refused_by_the_config_checks():
    with pytest.raises(ConfigError, match="lora.rank=0"):
        apply_values(RunConfig(), {"lora.rank": 0})


def test_the_shipped_space_files_parse_and_fit_their_configs():
    from pathlib import Path

    from tunesmith.config import load_config
    from tunesmith.tune.space import load_space

    examples = Path(__file__).parents[3] / "examples"
    space = load_space(examples / "spaces" / "movie-reviews.yaml")
    config = apply_values(load_config(examples / "movie-reviews.yaml"), {p.path: p.high if p.kind != "choice" else p.choices[0]
                                                                        for p in space.params})
    assert config.train.max_steps == 100 and space.objective.metric == "macro_f1"
