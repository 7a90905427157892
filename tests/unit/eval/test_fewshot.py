from tunesmith.data.examples import Message
from tunesmith.eval.fewshot import TfidfIndex, few_shot_prompt, select_shots
from tunesmith.eval.items import EvalItem


def item(text: str, label: str, where: str = "f:1") -> EvalItem:
    return EvalItem(where, (Message("system", "S"), Message("user", f"Classify: {text}")), label, label, text)


POOL = [item(f"review number {i} {'great' if i % 2 else 'awful'}", "positive" if i % 2 else "negative", f"train:{i}")
        for i in range(40)]


def test_no_test_row_ever_appears_in_its_own_prompt_even_when_it_is_also_in_the_pool():
    tests = [item(p.key.upper() + "!", p.label, f"test:{n}") for n, p in enumerate(POOL[:10])]  # same input, other case
    for method in ("random", "similar", "fixed"):
        for position, test in enumerate(tests):
            shots = select_shots(test, position, POOL, 5, method, seed=0)
            assert len(shots) == 5
            assert all(shot.key != POOL[position].key for shot in shots), (method, position)
            prompt = few_shot_prompt(test, shots)
            assert sum(POOL[position].key in m.content for m in prompt) == 0


def test_random_shots_are_seeded_per_row_and_differ_between_rows():
    test = item("something new", "positive", "test:0")
    assert select_shots(test, 0, POOL, 5, "random", seed=1) == select_shots(test, 0, POOL, 5, "random", seed=1)
    assert select_shots(test, 0, POOL, 5, "random", seed=1) != select_shots(test, 1, POOL, 5, "random", seed=1)


def test_similar_shots_are_the_nearest_inputs():
    index = TfidfIndex([p.key for p in POOL])
    assert index.nearest("review number 7 great", 1, exclude=set()) == [7]
    shots = select_shots(item("number 12 awful", "negative"), 0, POOL, 3, "similar", seed=0, index=index)
    assert shots[0].key == "review number 12 awful"


def test_prompt_shape_is_system_then_solved_turns_then_the_question():
    shots = POOL[:2]
    prompt = few_shot_prompt(item("new one", "positive"), shots)
    assert [m.role for m in prompt] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt[2].content == shots[0].reference and prompt[-1].content == "Classify: new one"


def test_label_shots_are_balanced_over_the_classes_and_interleaved():
    from collections import Counter

    three = [item(f"text {i}", ["a", "b", "c"][i % 3], f"train:{i}") for i in range(60)]
    lopsided = [item(f"text {i}", "positive" if i < 36 else "negative", f"train:{i}") for i in range(40)]  # 9:1
    for pool, classes in ((POOL, 2), (three, 3), (lopsided, 2)):
        for method in ("random", "similar", "fixed"):
            for position in range(30):
                shots = select_shots(item(f"query {position}", "x"), position, pool, 5, method, seed=0)
                counts = Counter(shot.label for shot in shots)
                assert len(shots) == 5 and len(counts) == classes and max(counts.values()) - min(counts.values()) <= 1
                assert any(a.label != b.label for a, b in zip(shots, shots[1:]))  # interleaved, not one class last


def test_similar_shots_are_the_nearest_within_each_class():
    shots = select_shots(item("number 12 awful", "negative"), 0, POOL, 2, "similar", seed=0)
    assert {s.label for s in shots} == {"negative", "positive"}
    assert "review number 12 awful" in [s.key for s in shots]  # the nearest row of its class comes first in its class


def test_fixed_shots_are_the_same_for_every_row_except_one_whose_input_is_among_them():
    shots = select_shots(item("something new", "x"), 0, POOL, 5, "fixed", seed=3)
    assert all(select_shots(item(f"other {n}", "x"), n, POOL, 5, "fixed", seed=3) == shots for n in range(1, 20))
    assert select_shots(item("something new", "x"), 0, POOL, 5, "fixed", seed=4) != shots  # seeded
    own = shots[2]
    replaced = select_shots(item(own.key, own.label), 7, POOL, 5, "fixed", seed=3)
    assert own not in replaced and sum(s in shots for s in replaced) == 4
