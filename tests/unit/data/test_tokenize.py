"""Training ids are the ids of the whole rendered text, and the prompt's ids are the ones generation uses.

A SentencePiece-style tokenizer (Metaspace pre-tokenizer, as in Llama-2, Mistral and TinyLlama) puts a
`▁` before every text it is given, so tokenizing a conversation piece by piece gives other ids than
tokenizing it whole; the tokenizer here is built and trained in the test, with a Llama-2 chat template.
"""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tunesmith.data.examples import Example, Message
from tunesmith.data.template import analyze_template, render
from tunesmith.data.tokenize import encode_prompt, tokenize_examples

LLAMA2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
SENTENCES = ["Which colour is the sky? Blue.", "Hello there, how are you?", "Goodbye and thanks for all the fish.",
             "[INST] What is two plus two? [/INST] Four.", "The quick brown fox jumps over the lazy dog."]


def metaspace_tokenizer(prepend_scheme: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    backend.train_from_iterator(SENTENCES * 3, trainer)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])  # Llama's BOS
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = LLAMA2_TEMPLATE
    return tokenizer


@pytest.fixture(params=["first", "always"])
def llama_tok(request):
    return metaspace_tokenizer(request.param)


def chat(*turns: tuple[str, str], train: list[bool] | None = None) -> Example:
    flags = iter(train or [])
    return Example("t.jsonl", 1, "chat",
                   messages=tuple(Message(r, c, next(flags, True) if r == "assistant" else True) for r, c in turns))


def whole_ids(tok, messages) -> list[int]:
    return tok(render(tok, messages), add_special_tokens=False)["input_ids"]


def loss_runs(mask) -> list[tuple[int, int]]:
    """[start, end) of each run of tokens in the loss."""
    runs, start = [], None
    for index, flag in enumerate([*mask.tolist(), False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            runs.append((start, index))
            start = None
    return runs


def test_metaspace_training_ids_are_the_whole_rendered_text_and_the_prompt_is_what_generation_feeds(llama_tok):
    info = analyze_template(llama_tok, None)
    assert info.turn_end_text == " </s>"
    example = chat(("user", "Which colour is the sky?"), ("assistant", "Blue."))
    (tokenized,) = tokenize_examples([example], llama_tok, info, "assistant")
    ids = tokenized.input_ids.tolist()
    assert ids == whole_ids(llama_tok, example.messages)
    prompt_ids = encode_prompt(llama_tok, info, [example.messages[0]])
    assert ids[:len(prompt_ids)] == prompt_ids
    # the loss covers exactly what follows the prompt: the reply and the end of its turn
    assert loss_runs(tokenized.loss_mask) == [(len(prompt_ids), len(ids))]
    assert ids[-1] == llama_tok.eos_token_id
    assert llama_tok.decode(ids[len(prompt_ids):]).strip() == "Blue. </s>"


def test_metaspace_multi_turn_every_reply_follows_its_generation_prompt_ids(llama_tok):
    info = analyze_template(llama_tok, None)
    example = chat(("user", "Hello there"), ("assistant", "How are you?"), ("user", "What is two plus two?"),
                   ("assistant", "Four."), ("user", "Thanks"), ("assistant", "Goodbye."), train=[True, False, True])
    (tokenized,) = tokenize_examples([example], llama_tok, info, "assistant")
    ids = tokenized.input_ids.tolist()
    assert ids == whole_ids(llama_tok, example.messages)
    prompts = [encode_prompt(llama_tok, info, list(example.messages[:index])) for index in (1, 3, 5)]
    for prompt in prompts:
        assert ids[:len(prompt)] == prompt
    # "How" is not in this vocabulary as "▁How": the first reply begins with the template's space as a
    # token of its own, which generation has to write, so it is in the loss
    assert llama_tok.convert_ids_to_tokens(ids[len(prompts[0])]) == "▁"
    # each reply runs from its prompt's end through the eos that closes its turn; the second has train=False
    ends = [ids.index(llama_tok.eos_token_id, len(prompt)) + 1 for prompt in prompts]
    assert loss_runs(tokenized.loss_mask) == [(len(prompts[0]), ends[0]), (len(prompts[2]), ends[2])]
    assert ends[2] == len(ids)
    (everything,) = tokenize_examples([example], llama_tok, info, "all")
    assert everything.input_ids.tolist() == ids  # loss_on changes the mask, never the ids
    assert loss_runs(everything.loss_mask) == [(1, len(ids))]


def test_metaspace_text_and_completion_rows_are_tokenized_as_one_text_after_bos(llama_tok):
    info = analyze_template(llama_tok, None)
    assert info.prefix_ids == (llama_tok.bos_token_id,)
    text = Example("t", 1, "text", text="The quick brown fox.")
    completion = Example("t", 2, "completion", prompt="[INST] What is two plus two? [/INST]", completion=" Four.")
    tokenized_text, tokenized_completion = tokenize_examples([text, completion], llama_tok, info, "assistant")
    bos, eos = llama_tok.bos_token_id, llama_tok.eos_token_id
    assert tokenized_text.input_ids.tolist() == [*llama_tok("The quick brown fox.")["input_ids"], eos]
    assert loss_runs(tokenized_text.loss_mask) == [(1, len(tokenized_text))]
    ids = tokenized_completion.input_ids.tolist()
    assert ids == [*llama_tok(completion.prompt + completion.completion)["input_ids"], eos]
    prompt_ids = llama_tok(completion.prompt)["input_ids"]
    assert ids[:len(prompt_ids)] == prompt_ids and prompt_ids[0] == bos
    assert loss_runs(tokenized_completion.loss_mask) == [(len(prompt_ids), len(ids))]


def test_a_prompt_ending_inside_a_token_is_cut_there_so_its_ids_are_what_generation_feeds(tokenizer):
    """Pins the fallback: with a trailing space in the generation prompt, " Hello" would cross it."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    info = analyze_template(tok, 2)
    example = chat(("user", "Hi"), ("assistant", "Hello"))
    assert tok(render(tok, example.messages), add_special_tokens=False)["input_ids"] != \
        tokenize_examples([example], tok, info, "assistant")[0].input_ids.tolist()  # one call would cross the cut
    (tokenized,) = tokenize_examples([example], tok, info, "assistant")
    prompt_ids = encode_prompt(tok, info, [example.messages[0]])
    ids = tokenized.input_ids.tolist()
    assert ids[:len(prompt_ids)] == prompt_ids
    assert loss_runs(tokenized.loss_mask) == [(len(prompt_ids), len(ids) - 1)]  # the final "\n" is not
    assert tok.decode(ids[len(prompt_ids):-1]) == "Hello<|im_end|>"


def test_inspect_table_shows_the_sentencepiece_marker_that_decoding_one_token_drops(llama_tok):
    from tunesmith.data.inspect import show_table
    from tunesmith.data.template import analyze_template
    from tunesmith.data.tokenize import tokenize_examples

    example = tokenize_examples([chat(("user", "Hello there"), ("assistant", "Hello"))], llama_tok,
                                analyze_template(llama_tok), "assistant")[0]
    table = show_table(example, llama_tok)
    assert any("▁" in line.split()[3] for line in table.splitlines()[1:] if len(line.split()) > 3)
