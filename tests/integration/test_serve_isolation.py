"""One request must not hurt the others: a row that fails while decoding fails alone, ranges are
checked before anything is queued, and a request that can never fit is told so (400), not to retry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")

from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402

PROMPTS = ["Name a colour.", "What is two plus two?", "Say hello in French.", "Which planet is largest?"]


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path) -> ServedModels:
    served = ServedModels(precision="fp32")
    served.add_base(str(tiny_model_dir), "tiny")
    return served


def test_a_row_that_fails_while_decoding_fails_alone_and_its_batch_mates_answer_as_alone(models: ServedModels):
    """Four greedy rows and one that cannot be answered (more top logprobs than the vocabulary holds,
    which the API's schema refuses: torch.topk raises) decode in one batch: the four give their lone
    answers, the fifth an error. Before, the whole batch answered with that error."""
    from tunesmith.serve.engine import Engine, Row, Sampling

    served = models.get("tiny")
    engine = Engine(models)
    engine.close()  # the test drives the decoding itself
    backend = models.backends[served.backend]

    def decode(rows_sampling: list[Sampling]) -> list[list]:
        events: list[list] = [[] for _ in rows_sampling]
        rows = [Row(served, served.tokenizer(PROMPTS[i % 4], add_special_tokens=False)["input_ids"], sampling,
                    events[i].append) for i, sampling in enumerate(rows_sampling)]
        engine._decode(backend, rows)
        return events

    greedy = Sampling(max_tokens=8, temperature=0)
    together = decode([greedy, greedy, greedy, greedy, Sampling(max_tokens=8, temperature=0, top_logprobs=10**9)])
    assert [e[-1].error for e in together[:4]] == [None] * 4
    assert ["".join(e.text for e in together[i]) for i in range(4)] == [
        "".join(e.text for e in decode([greedy] * (i + 1))[i]) for i in range(4)]
    assert together[4][-1].error is not None


def test_a_tiny_temperature_or_a_huge_seed_beside_greedy_requests_hurts_none_of_them(models: ServedModels):
    """As tried from outside: four greedy requests in flight, then one with temperature 1e-45 (it
    answered 500 for all five: softmax of logits / 1e-45 is NaN). Now every request answers, the
    1e-45 one as greedy decoding does; a seed past 64 bits is a 400 naming it."""
    with running(create_app(models, ServeConfig(max_batch=8))) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120)

        def ask(prompt: str, **sampling) -> str:
            reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                                   max_tokens=16, **sampling)
            return reply.choices[0].message.content

        alone = [ask(prompt, temperature=0) for prompt in PROMPTS]
        with ThreadPoolExecutor(5) as pool:
            greedy = [pool.submit(ask, prompt, temperature=0) for prompt in PROMPTS]
            tiny = pool.submit(ask, PROMPTS[0], temperature=1e-45)
            assert [future.result() for future in greedy] == alone
            assert tiny.result() == alone[0]
        for seed in (2**70, -(2**70)):
            with pytest.raises(openai.BadRequestError) as refused:
                ask(PROMPTS[0], seed=seed)
            assert refused.value.body["param"] == "seed"
        assert ask(PROMPTS[0], temperature=0.7, seed=2**63 - 1)  # the largest 64-bit seed works


def test_a_request_needing_more_rows_than_the_queue_holds_is_told_it_can_never_fit(models: ServedModels):
    with running(create_app(models, ServeConfig(max_queue=4))) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120)
        with pytest.raises(openai.BadRequestError, match="can never fit"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], n=5,
                                           max_tokens=2)
        assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], n=4,
                                              max_tokens=2).choices


def test_temperature_and_top_p_at_the_smallest_float_answer(models: ServedModels):
    """5e-324 (the smallest positive double) is 0 in the logits' fp32: temperature divided by zero
    and top_p cut every token, and both answered 500 (found by the schema-driven fuzzing)."""
    with running(create_app(models, ServeConfig())) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120)
        greedy = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": PROMPTS[0]}],
                                                max_tokens=6, temperature=0).choices[0].message.content
        for sampling in ({"temperature": 5e-324}, {"top_p": 5e-324}, {"temperature": 5e-324, "top_p": 5e-324}):
            reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": PROMPTS[0]}],
                                                   max_tokens=6, **sampling)
            assert reply.choices[0].message.content == greedy, sampling
            assert client.completions.create(model="tiny", prompt="Hello", max_tokens=3, **sampling).choices
