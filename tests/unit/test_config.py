from pathlib import Path

import pytest

from tunesmith.config import RunConfig, build_config, describe_settings, dump_config, load_config
from tunesmith.errors import ConfigError


def test_defaults_build_and_learning_rate_follows_the_method():
    config = build_config({})
    assert config == RunConfig()
    assert config.learning_rate == 2e-4
    assert build_config({"lora": {"enabled": False}}).learning_rate == 2e-5
    assert build_config({"train": {"learning_rate": 0.5}}).learning_rate == 0.5


def test_yaml_file_maps_onto_sections(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("model: some/model\ndata:\n  train: rows.jsonl\n  max_length: 256\ntrain:\n  batch_size: 2\n")
    config = load_config(path)
    assert config.model.name == "some/model"
    assert config.data.train == "rows.jsonl"
    assert config.data.max_length == 256
    assert config.train.batch_size == 2


@pytest.mark.parametrize(("raw", "suggestion"), [
    ({"trian": {}}, "'train'"),
    ({"train": {"learning_rat": 1.0}}, "'train.learning_rate'"),
    ({"lora": {"rnak": 8}}, "'lora.rank'"),
])
def test_unknown_keys_are_errors_that_suggest_the_closest_key(raw, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}"):
        build_config(raw)


def test_overrides_parse_values_and_coerce_lossless_spellings():
    config = build_config({}, ["train.learning_rate=1e-4", "data.columns={prompt: q}", "lora.target_modules=[q_proj, v_proj]",
                               "train.max_steps=7", "data.truncate=true"])
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert isinstance(config.train.learning_rate, float)
    assert config.data.columns == {"prompt": "q"}
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.train.max_steps == 7
    assert config.data.truncate is True


@pytest.mark.parametrize(("override", "message"), [
    ("train.batch_size=four", "expected a whole number"),
    ("data.truncate=maybe", "expected true or false"),
    ("train.scheduler=cosin", "did you mean 'cosine'"),
    ("train.batch_size=0", "must be at least 1"),
    ("data.validation_split=1.5", "must be in"),
    ("no_equals_sign", "expected KEY=VALUE"),
])
def test_bad_values_are_reported_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config({}, [override])


def test_broken_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 2\n   bad: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)


def test_every_setting_has_help_and_the_dump_round_trips(tmp_path: Path):
    rows = describe_settings()
    assert len(rows) > 30
    assert all(help_text for _, _, help_text in rows), [key for key, _, h in rows if not h]
    config = build_config({"data": {"train": "x.jsonl"}}, ["train.max_steps=3"])
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_every_unknown_key_and_bad_value_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        build_config({"trian": {}, "lora": {"rnak": 8, "alpha": "big"}}, ["train.batch_size=four"])
    message = str(error.value)
    assert message.startswith("4 problems")
    for part in ("'trian'", "did you mean 'lora.rank'", "lora.alpha='big'", "train.batch_size='four'"):
        assert part in message


@pytest.mark.parametrize("override", [
    "train.max_grad_norm=-1", "lora.alpha=0", "lora.alpha=-16", "preference.temperature=0", "preference.top_p=0",
    "preference.top_p=1.5", "train.weight_decay=-0.1", "train.early_stopping_patience=0", "train.adam_eps=0",
    "train.early_stopping_min_delta=-1", "eval.max_rows=0", "eval.general_rows=0", "preference.simpo_gamma=-1",
    "train.seed=-1", "train.learning_rate=.inf", "train.learning_rate=.nan", "train.device=gpu", "train.device=cuda:x",
])
def test_out_of_range_numbers_are_rejected_with_their_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config({}, [override])


def test_max_grad_norm_zero_means_no_clipping():
    import torch

    from tunesmith.training.loop import _clip

    parameter = torch.nn.Parameter(torch.ones(3))
    parameter.grad = torch.tensor([3.0, 4.0, 0.0])
    assert build_config({}, ["train.max_grad_norm=0"]).train.max_grad_norm == 0
    assert _clip([parameter], 0) == pytest.approx(5.0)
    assert torch.equal(parameter.grad, torch.tensor([3.0, 4.0, 0.0]))  # untouched, not scaled to zero
    assert _clip([parameter], 1.0) == pytest.approx(5.0)
    assert torch.allclose(parameter.grad.norm(), torch.tensor(1.0), atol=1e-5)  # a positive value clips


def test_every_shipped_example_config_loads():
    from tunesmith.config import load_config

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    for path in examples:
        load_config(str(path), [])  # unknown keys or bad values would raise, naming the file


def test_a_bare_off_in_yaml_or_a_flag_means_the_word_not_false(tmp_path):
    """YAML 1.1 reads `off` as False; a setting whose choices include "off" takes it as the word."""
    from tunesmith.config import build_config, load_config

    assert build_config({}, ["data.audit=off"]).data.audit == "off"
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  audit: off\n")
    assert load_config(path).data.audit == "off"


def test_fsdp_is_for_full_fine_tuning():
    from tunesmith.config import build_config
    from tunesmith.errors import ConfigError

    assert build_config({}, ["distributed.strategy=fsdp", "lora.enabled=false"]).distributed.strategy == "fsdp"
    with pytest.raises(ConfigError, match=r"distributed.strategy='fsdp' shards full fine-tuning only .*set lora.enabled=false"):
        build_config({}, ["distributed.strategy=fsdp"])
    with pytest.raises(ConfigError, match="distributed.strategy"):
        build_config({}, ["distributed.strategy=zero3"])
