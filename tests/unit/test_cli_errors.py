"""The CLI's last resort: an error nobody foresaw is one line naming the command, never a traceback."""

from __future__ import annotations

import pytest

import tunesmith.cli as cli
import tunesmith.cli.guide as guide_commands


def _explode(args):
    raise RuntimeError("the tensor is on fire\nsecond line of detail")


def test_an_unforeseen_error_is_one_line_with_the_command_and_the_way_to_the_trace(monkeypatch, capsys):
    monkeypatch.setattr(guide_commands, "cmd_settings", _explode)
    assert cli.main(["settings"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: tunesmith settings failed: RuntimeError: the tensor is on fire;")
    assert "--debug" in err


def test_debug_shows_the_trace(monkeypatch):
    monkeypatch.setattr(guide_commands, "cmd_settings", _explode)
    with pytest.raises(RuntimeError, match="on fire"):
        cli.main(["--debug", "settings"])


def test_a_bad_device_is_a_one_line_config_error(capsys):
    assert cli.main(["train", "--data", "rows.jsonl", "--set", "train.device=gpu0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.device='gpu0' is not a device" in err


def test_help_lists_the_registered_methods_and_keeps_lora_full_apart(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps help at hyphens ("online-" / "dpo") on narrow terminals
    from tunesmith.training.session import METHODS, get_method

    get_method("sft")  # registers the built-in methods
    assert set(cli.METHOD_NAMES) == set(METHODS)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "training method (sets train.method): sft, pretrain, classify, token-classify, extractive-qa, dpo, online-dpo" in out
    assert "--tuning {lora,full}" in out
    assert cli.main(["train", "--data", "x.jsonl", "--method", "lora"]) == 2
    assert "use --tuning lora" in capsys.readouterr().err


def test_skipped_rows_summary_gives_ranges_not_a_literal_n():
    from tunesmith.training.session import summarize_reasons

    reasons = [f"example is {n} tokens, over data.max_length=1024" for n in (1030, 2400, 1500)] + ["a chat row has no label"]
    assert summarize_reasons(reasons) == [("example is 1030-2400 tokens, over data.max_length=1024", 3),
                                          ("a chat row has no label", 1)]


def test_warnings_print_as_one_line(monkeypatch):
    import warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    assert cli.main(["settings"]) == 0
    line = warnings.formatwarning("the template closes replies with '\\n'; tunesmith appends eos", UserWarning,
                                  "/x/template.py", 7, "warnings.warn(...)")
    assert line == "tunesmith: warning: the template closes replies with '\\n'; tunesmith appends eos\n"
