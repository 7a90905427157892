import copy

import pytest

from tunesmith.data.examples import Example, Message
from tunesmith.data.template import (
    analyze_template,
    default_chat_template,
    ensure_chat_template,
    render,
)
from tunesmith.data.tokenize import encode_prompt, tokenize_cached, tokenize_examples
from tunesmith.errors import ConfigError


@pytest.fixture()
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def chat(*turns: tuple[str, str], train: list[bool] | None = None) -> Example:
    flags = iter(train or [])
    messages = tuple(Message(r, c, next(flags, True) if r == "assistant" else True) for r, c in turns)
    return Example("t.jsonl", 1, "chat", messages=messages)


def loss_text(tok, tokenized) -> str:
    return tok.decode(tokenized.input_ids[tokenized.loss_mask].tolist())


def test_smollm2_replies_end_with_im_end_which_is_the_stop_token(tok):
    assert ensure_chat_template(tok) == "the model's own"
    info = analyze_template(tok, generation_eos=2)
    assert info.turn_end_text == "<|im_end|>"
    assert info.stop_token_ids == (tok.convert_tokens_to_ids("<|im_end|>"),)
    assert not info.append_eos


def test_loss_covers_each_assistant_reply_and_its_end_token_only(tok):
    info = analyze_template(tok, 2)
    example = chat(("user", "Hi"), ("assistant", "Hello there"), ("user", "Bye"), ("assistant", "Goodbye"))
    (tokenized,) = tokenize_examples([example], tok, info, "assistant")
    assert loss_text(tok, tokenized) == "Hello there<|im_end|>Goodbye<|im_end|>"
    assert tokenized.input_ids[tokenized.loss_mask][-1] == 2  # the reply ends with the stop token
    # segment-wise tokenization gives the same ids as tokenizing the whole rendered conversation
    whole = tok(render(tok, example.messages), add_special_tokens=False)["input_ids"]
    assert tokenized.input_ids.tolist() == whole


def test_weight_zero_turns_and_loss_on_all(tok):
    info = analyze_template(tok, 2)
    example = chat(("user", "Hi"), ("assistant", "skip me"), ("user", "Bye"), ("assistant", "learn me"), train=[False, True])
    (tokenized,) = tokenize_examples([example], tok, info, "assistant")
    assert loss_text(tok, tokenized) == "learn me<|im_end|>"
    (everything,) = tokenize_examples([example], tok, info, "all")
    assert everything.loss_mask[1:].all() and not everything.loss_mask[0]


def test_prompt_encoding_for_generation_matches_training_tokens(tok):
    info = analyze_template(tok, 2)
    example = chat(("user", "What is 2+2?"), ("assistant", "4"))
    (tokenized,) = tokenize_examples([example], tok, info, "assistant")
    prompt_ids = encode_prompt(tok, info, [example.messages[0]])
    first_loss_token = int(tokenized.loss_mask.argmax())
    assert tokenized.input_ids[:first_loss_token].tolist() == prompt_ids


def test_model_without_template_gets_the_documented_default_which_ends_replies_with_eos(tok):
    tok.chat_template = None
    assert "default" in ensure_chat_template(tok)
    assert tok.chat_template == default_chat_template()
    info = analyze_template(tok, None)
    assert info.turn_end_text == tok.eos_token and not info.append_eos
    (tokenized,) = tokenize_examples([chat(("user", "Hi"), ("assistant", "Hello"))], tok, info, "assistant")
    assert loss_text(tok, tokenized) == "Hello" + tok.eos_token
    rendered = render(tok, [Message("user", "Hi")], add_generation_prompt=True)
    assert rendered == "### User:\nHi\n\n### Assistant:\n"


def test_template_without_a_closing_special_token_gets_eos_appended_with_a_warning(tok):
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.warns(UserWarning, match="appends"):
        info = analyze_template(tok, None)
    assert info.append_eos
    (tokenized,) = tokenize_examples([chat(("user", "Hi"), ("assistant", "Hello"))], tok, info, "assistant")
    assert tokenized.input_ids[-1] != tok.eos_token_id  # the template's own trailing text comes last
    assert loss_text(tok, tokenized) == "Hello" + tok.eos_token


def test_template_that_rewrites_history_cannot_be_masked_and_says_so(tok):
    # Renders earlier turns differently once a later turn exists: no stable prefix.
    tok.chat_template = ("{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}|{% endfor %}"
                         "{% if add_generation_prompt %}A:{% endif %}")
    with pytest.raises(ConfigError, match="data.loss_on=all"):
        analyze_template(tok, None)


def test_override_template_from_text_and_from_a_missing_file(tok, tmp_path):
    assert ensure_chat_template(tok, "{{ messages[0]['content'] }}") == "model.chat_template setting"
    with pytest.raises(ConfigError, match="no such file"):
        ensure_chat_template(tok, str(tmp_path / "missing.jinja"))


def test_text_and_completion_rows_train_on_their_text_and_a_final_eos(tok):
    info = analyze_template(tok, 2)
    text = Example("t", 1, "text", text="The quick brown fox.")
    completion = Example("t", 2, "completion", prompt="Q: capital of France?\nA:", completion=" Paris")
    tokenized_text, tokenized_completion = tokenize_examples([text, completion], tok, info, "assistant")
    assert loss_text(tok, tokenized_text) == " quick brown fox.<|im_end|>"  # every token but the first
    assert loss_text(tok, tokenized_completion) == " Paris<|im_end|>"


def test_tokenized_examples_come_from_the_cache_the_second_time(tok):
    info = analyze_template(tok, 2)
    examples = [chat(("user", f"Q{i}"), ("assistant", f"A{i}")) for i in range(5)]
    first, cached_first = tokenize_cached(examples, tok, info, "assistant")
    second, cached_second = tokenize_cached(examples, tok, info, "assistant")
    assert (cached_first, cached_second) == (False, True)
    assert all((a.input_ids == b.input_ids).all() and (a.loss_mask == b.loss_mask).all() for a, b in zip(first, second))
    _, other_setting = tokenize_cached(examples, tok, info, "all")
    assert other_setting is False
