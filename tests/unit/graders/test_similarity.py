"""text_similarity's metrics against their reference implementations, and against numbers worked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.graders import run_grader
from tunesmith.graders.similarity import bleu, cosine, fuzzy_match, gleu, meteor, rouge, words

PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("the cat sat", "the cat sat on the mat"),
    ("A quick brown fox jumps over the lazy dog", "The quick brown fox jumped over a lazy dog"),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("completely unrelated words here", "The capital of France is Paris."),
    ("", "something"),
]


@pytest.mark.parametrize(("text", "reference"), PAIRS)
def test_fuzzy_match_is_rapidfuzz_ratio_over_100(text: str, reference: str):
    from rapidfuzz import fuzz

    assert fuzzy_match(text, reference) == fuzz.ratio(text, reference) / 100


def test_fuzzy_match_by_hand():
    # Indel similarity: kitten/sitting share 4 letters in order (i, t, t, n): 2 * 4 / (6 + 7)
    assert fuzzy_match("kitten", "sitting") == pytest.approx(8 / 13)


@pytest.mark.parametrize(("text", "reference"), PAIRS)
def test_bleu_is_nltk_sentence_bleu_with_chen_cherry_method4(text: str, reference: str):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    expected = sentence_bleu([words(reference)], words(text), smoothing_function=SmoothingFunction().method4)
    assert bleu(text, reference) == expected


def test_bleu_is_smoothed_so_a_short_correct_answer_does_not_score_zero():
    from nltk.translate.bleu_score import sentence_bleu

    with pytest.warns(UserWarning, match="0 counts of 4-gram overlaps"):
        unsmoothed = sentence_bleu([words("the cat sat on the mat")], words("the cat sat"))
    assert unsmoothed < 1e-50  # no 4-gram at all: nltk's unsmoothed BLEU is 0 (to the float's last bit)
    assert bleu("the cat sat", "the cat sat on the mat") > 0.1
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == 1.0


@pytest.mark.parametrize(("text", "reference"), PAIRS)
def test_gleu_is_nltk_sentence_gleu(text: str, reference: str):
    from nltk.translate.gleu_score import sentence_gleu

    assert gleu(text, reference) == sentence_gleu([words(reference)], words(text))


def test_gleu_by_hand():
    # 1- to 4-grams: the answer has 3 + 2 + 1 = 6, all in the reference, which has 6 + 5 + 4 + 3 = 18:
    # min(precision 6/6, recall 6/18)
    assert gleu("the cat sat", "the cat sat on the mat") == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", ["rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"])
@pytest.mark.parametrize(("text", "reference"), PAIRS)
def test_rouge_is_rouge_score_fmeasure_without_stemming(metric: str, text: str, reference: str):
    from rouge_score.rouge_scorer import RougeScorer

    rouge_type = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
    expected = RougeScorer([rouge_type], use_stemmer=False).score(reference, text)[rouge_type].fmeasure
    assert rouge(metric, text, reference) == expected


def test_rouge_by_hand():
    # unigrams: precision 3/3, recall 3/6 -> F = 2 * 1 * 0.5 / 1.5
    assert rouge("rouge_1", "the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert rouge("rouge_5", "the cat sat", "the cat sat on the mat") == 0.0  # no 5-gram in a 3-word answer


def test_words_are_treebank_tokens_and_a_final_full_stop_is_its_own_word():
    assert words("Don't stop, Paris.") == ["Do", "n't", "stop", ",", "Paris", "."]
    assert words("Hello world. Bye.") == ["Hello", "world.", "Bye", "."]  # no Punkt data: no sentence split


@pytest.mark.parametrize(("reference", "text", "expected"), [
    # nltk's own METEOR doctests (nltk/test/meteor.doctest), which ran with nltk's downloaded WordNet
    ("The candidate has no alignment to any of the references", "John loves Mary", 0.0),
    ("The cat sat on the mat", "on the mat sat the cat", 0.5),
    ("The cat sat on the mat", "The cat was sat on the mat", 0.9654),
    ("create or update a vm set", "creates or updates a virtual machine scale set", 0.7806),
    ("It is a guide to action that ensures that the military will forever heed Party commands",
     "It is a guide to action which ensures that the military always obeys the commands of the party", 0.6944),
])
def test_meteor_reproduces_nltks_documented_scores(grader_data: Path, reference: str, text: str, expected: float):
    assert round(meteor(text, reference), 4) == expected


def test_meteor_matches_wordnet_synonyms(grader_data: Path):
    # "auto" is in the synset of "car" (car.n.01): a synonym counts as a match, a banana does not
    synonym, unrelated = meteor("the auto is fast", "the car is fast"), meteor("the banana is fast", "the car is fast")
    assert synonym > 0.99 and unrelated < 0.7


def test_the_wordnet_files_are_wordnet_30_with_every_synset_at_its_byte_offset(grader_data: Path):
    """nltk finds a synset by its byte offset; the files as packaged (Windows line ends) shift every
    offset, so each synset line must start with its own position, in every data file."""
    from tunesmith.graders.wordnet import wordnet_folder

    folder = wordnet_folder()
    assert (folder / "data.noun").stat().st_size == 15_300_280  # WordNet 3.0's data.noun
    synsets = 0
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        data = (folder / name).read_bytes()
        position = 0
        for line in data.splitlines(keepends=True):
            if not line.startswith(b"  "):  # the licence lines at the top start with two spaces
                assert int(line[:8]) == position, f"{name}: a synset line at byte {position} says {line[:8]!r}"
                synsets += 1
            position += len(line)
    assert synsets == 117_659  # WordNet 3.0's synsets


def test_cosine_is_the_cosine_of_mean_pooled_minilm_embeddings(grader_data: Path, shared_minilm: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(shared_minilm).eval(), AutoTokenizer.from_pretrained(shared_minilm)

    def embedding(text: str) -> torch.Tensor:  # sentence-transformers' recipe for this model, for one text
        with torch.no_grad():
            mean = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(0)
        return mean / mean.norm()

    text, reference = "The physician told the patient to rest.", "The doctor said the patient should rest."
    assert cosine(text, reference) == pytest.approx(float(embedding(text) @ embedding(reference)), abs=1e-5)
    assert cosine(text, text) == pytest.approx(1.0, abs=1e-5)
    assert cosine(text, reference) > cosine(text, "The bakery sells rye bread on Saturdays.")


def test_text_similarity_grader_fills_its_templates_and_reports_the_metric(grader_data: Path):
    grader = {"type": "text_similarity", "name": "similar", "input": "{{ sample.output_text }}",
              "reference": "{{ item.summary }}", "evaluation_metric": "meteor"}
    result = run_grader(grader, sample="the cat sat on the mat", item={"summary": "on the mat sat the cat"})
    assert result["reward"] == meteor("the cat sat on the mat", "on the mat sat the cat")
