"""The text_similarity grader's metrics, each computed by the reference implementation, not a copy.

    fuzzy_match   rapidfuzz's fuzz.ratio / 100 (OpenAI's docs name RapidFuzz)
    bleu          nltk's sentence_bleu: 1- to 4-grams, equal weights, one reference, smoothed by
                  Chen & Cherry's (2014) method 4 (SmoothingFunction().method4: a missing n-gram
                  match counts as a share that shrinks with 1/ln(length)), as Azure AI Foundry's
                  BleuScoreEvaluator computes it (OpenAI does not say). Unsmoothed, any answer
                  without a matching 4-gram scores 0: every answer under 4 words would score 0
    gleu          nltk's sentence_gleu (Google BLEU, 1- to 4-grams), as Azure's GleuScoreEvaluator
    meteor        nltk's meteor_score (alpha 0.9, beta 3, gamma 0.5: nltk's and Azure's defaults) with
                  Princeton WordNet 3.0 for its synonym stage (graders/wordnet.py)
    rouge_1..5/l  rouge-score's RougeScorer F-measure, no stemming (the package's default, and Azure's)
    cosine        the cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the catalog's
                  all-minilm-l6-v2, mean-pooled and normalized as models/retrieval.py computes them);
                  OpenAI embeds with its text-embedding-3-large, which cannot run here

bleu, gleu and meteor read words: both texts are split by nltk's NLTKWordTokenizer, the Treebank
tokenizer inside nltk.word_tokenize. word_tokenize first splits sentences with the Punkt model,
which is nltk data that cannot be downloaded here, so a full stop inside a text stays on its word
("Paris. It" -> "Paris.", "It"); one at the very end is split off as word_tokenize splits it.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

ROUGE_TYPES = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_3": "rouge3", "rouge_4": "rouge4",
               "rouge_5": "rouge5", "rouge_l": "rougeL"}
ENCODER = "all-minilm-l6-v2"


def similarity(metric: str, text: str, reference: str) -> float:
    """`metric` (one of schema.SIMILARITY_METRICS) of `text` against `reference`."""
    if metric in ROUGE_TYPES:
        return rouge(metric, text, reference)
    return {"fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor,
            "cosine": cosine}[metric](text, reference)


def fuzzy_match(text: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return fuzz.ratio(text, reference) / 100.0


def words(text: str) -> list[str]:
    """The words nltk's metrics compare (see the module docstring)."""
    return _tokenizer().tokenize(text)


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def bleu(text: str, reference: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    with warnings.catch_warnings():  # nltk warns that a text with no overlap scores 0; that 0 is the answer
        warnings.simplefilter("ignore", UserWarning)
        return float(sentence_bleu([words(reference)], words(text), smoothing_function=SmoothingFunction().method4))


def gleu(text: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([words(reference)], words(text)))


def meteor(text: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    from tunesmith.graders.wordnet import wordnet_reader

    return float(meteor_score([words(reference)], words(text), wordnet=wordnet_reader()))


def rouge(metric: str, text: str, reference: str) -> float:
    return _rouge_scorer(ROUGE_TYPES[metric]).score(reference, text)[ROUGE_TYPES[metric]].fmeasure


@functools.cache
def _rouge_scorer(rouge_type: str) -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer([rouge_type], use_stemmer=False)


def cosine(text: str, reference: str) -> float:
    vectors = _encoder().embed([text, reference])  # unit length: the dot product is the cosine
    return float(vectors[0] @ vectors[1])


@functools.lru_cache(maxsize=1)
def _encoder() -> Any:
    from tunesmith.models.retrieval import Chunk, DenseIndex

    # DenseIndex is the project's one embedding path (models/retrieval.py); it wants a corpus, so it
    # gets one empty chunk and is used only for `embed`.
    return DenseIndex([Chunk("cosine#0", "cosine", "")], ENCODER)
