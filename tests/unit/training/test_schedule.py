import pytest

from tunesmith.training.schedule import lr_factor, warmup_steps


def test_warmup_rises_linearly_to_the_peak():
    assert warmup_steps(100, 0.1) == 10
    assert [lr_factor(s, 100, 4, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(("kind", "middle", "end"), [("cosine", 0.5, 0.0), ("linear", 0.5, 0.0), ("constant", 1.0, 1.0)])
def test_decay_shapes(kind, middle, end):
    assert lr_factor(0, 100, 0, kind) == pytest.approx(1.0)
    assert lr_factor(50, 100, 0, kind) == pytest.approx(middle)
    assert lr_factor(100, 100, 0, kind) == pytest.approx(end)
    assert all(0.0 <= lr_factor(s, 100, 0, kind) <= 1.0 for s in range(100))
