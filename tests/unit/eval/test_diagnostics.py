from tunesmith.eval.diagnostics import forgetting_note, overfitting_notes


def records(val: list[tuple[int, float]], train: list[float]) -> list[dict]:
    rows = [{"step": s + 1, "loss": loss} for s, loss in enumerate(train)]
    rows += [{"step": s, "val_loss": v} for s, v in val]
    return sorted(rows, key=lambda r: r["step"])


def test_validation_rising_while_training_falls_is_flagged_with_the_best_step():
    notes = overfitting_notes(records([(0, 2.0), (10, 1.0), (20, 1.3), (30, 1.6)], [2.0 - 0.05 * i for i in range(30)]))
    assert any(n.startswith("Overfitting: validation loss rose from 1.000 (step 10) to 1.600 (step 30)") for n in notes)
    assert any("weights of step 10" in n for n in notes)


def test_falling_validation_loss_is_not_flagged():
    notes = overfitting_notes(records([(0, 2.0), (10, 1.5), (20, 1.2)], [2.0 - 0.03 * i for i in range(20)]))
    assert not any("Overfitting" in n for n in notes)
    assert any("No sign of overfitting" in n for n in notes)


def test_forgetting_note_reads_the_ratio():
    note = forgetting_note({"source": "c4-demo", "documents": 8, "ppl_before": 20.0, "ppl_after": 30.0, "ratio": 1.5})
    assert "20.00 before, 30.00 after (x1.500)" in note and "much general ability was lost" in note
    assert "little was forgotten" in forgetting_note({"source": "x", "documents": 8, "ppl_before": 20.0, "ppl_after": 20.2, "ratio": 1.01})
