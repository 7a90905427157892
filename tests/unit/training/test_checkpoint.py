from pathlib import Path

import torch

from tunesmith.training.checkpoint import (
    TrainState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    recover_best,
    save_checkpoint,
    step_folder,
)


def model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_optimizer_rng_and_loop_state(tmp_path: Path):
    model, optimizer = model_and_optimizer(0)
    state = TrainState(step=7, epoch=1, micro_index=3, tokens_seen=1234, best_val_loss=0.5, best_step=6)
    save_checkpoint(step_folder(tmp_path, 7), model, optimizer, state)
    expected_random = torch.rand(3)

    other, other_optimizer = model_and_optimizer(1)
    restored = load_checkpoint(step_folder(tmp_path, 7), other, other_optimizer)
    assert restored == state
    assert torch.equal(torch.rand(3), expected_random)  # RNG continues where it was saved
    for (name, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), name
    for a, b in zip(optimizer.state.values(), other_optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
        assert float(a["step"]) == float(b["step"])


def test_interrupted_write_is_never_taken_for_a_checkpoint(tmp_path: Path):
    model, optimizer = model_and_optimizer(0)
    save_checkpoint(step_folder(tmp_path, 2), model, optimizer, TrainState(step=2))
    # what a crash during the write of step 4 leaves behind
    partial = tmp_path / ".partial-step-0000004"
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path) == step_folder(tmp_path, 2)
    prune_checkpoints(tmp_path, keep=5)
    assert not partial.exists()


def test_pruning_keeps_the_newest(tmp_path: Path):
    model, optimizer = model_and_optimizer(0)
    for step in (1, 2, 3, 4):
        save_checkpoint(step_folder(tmp_path, step), model, optimizer, TrainState(step=step))
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004"]


def test_best_survives_a_crash_between_its_two_renames(tmp_path: Path):
    model, _ = model_and_optimizer(0)
    save_checkpoint(tmp_path / "best", model, None, TrainState(step=3))
    (tmp_path / "best").rename(tmp_path / ".old-best")  # crash after moving the old one aside
    best = recover_best(tmp_path)
    assert best == tmp_path / "best" and (best / "state.json").is_file()


def test_a_checkpoint_of_another_model_or_a_damaged_one_is_a_clear_run_error(tmp_path: Path):
    import pytest

    from tunesmith.errors import RunError

    model, optimizer = model_and_optimizer(0)
    folder = save_checkpoint(step_folder(tmp_path, 1), model, optimizer, TrainState(step=1))
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 2))
    with pytest.raises(RunError, match="does not match the model being trained"):
        load_checkpoint(folder, other, None)
    (folder / "state.json").write_text('{"step": ')
    with pytest.raises(RunError, match="cannot be read .*move that folder away"):
        load_checkpoint(folder, model, optimizer)


def test_each_rank_gets_its_own_random_state_back_and_rank_0s_where_it_has_none(tmp_path: Path):
    import random

    from tunesmith.training.checkpoint import rng_state

    model, optimizer = model_and_optimizer(0)
    states = []
    for seed in (1, 2):  # rank 0's generators, then rank 1's
        torch.manual_seed(seed)
        random.seed(seed)
        states.append(rng_state())
    folder = save_checkpoint(step_folder(tmp_path, 1), model, optimizer, TrainState(step=1, processes=2), states)
    assert sorted(p.name for p in folder.glob("rng*")) == ["rng-rank-1.safetensors", "rng.safetensors"]
    for rank, seed in ((0, 1), (1, 2), (2, 1)):  # rank 2 of a resume on 3: the checkpoint has none for it
        torch.manual_seed(seed)
        random.seed(seed)
        expected_torch, expected_python = torch.rand(2), random.random()
        torch.manual_seed(99)
        random.seed(99)
        load_checkpoint(folder, model, optimizer, rank)
        assert torch.equal(torch.rand(2), expected_torch) and random.random() == expected_python, rank
