"""How far live prompts have moved from the prompts a run was trained on, and whether that is
enough to retrain.

Every figure is measured the same way twice: live prompts against the *reference* part of the
training prompts, and same-size samples of a *held-out* part of the training prompts against that
same reference. The second gives the figure's baseline (what text the model was trained for looks
like when it is new to the reference) and its noise (the 99th percentile over the samples). Small
samples always look shifted (PSI of 30 draws from the very same distribution is about 0.3 on 10
bins), so a figure flags only when it passes its rule-of-thumb threshold AND lies above the noise
of a training sample of the live sample's size. (Two halves of the training set would not do as the
baseline: a half holds hundreds of prompts, and its distance from the other half is smaller than
that of any 30-prompt sample, so every small live sample would look drifted.)

Formulas (shares p_i of the training reference, q_i of the sample, each share below EPSILON raised to
EPSILON so that an empty bin gives a large finite term rather than infinity):

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i)
    unseen-vocabulary share = live word tokens (lowercased \\w+ runs) absent from the reference's
                              words / all live word tokens
    centroid distance = 1 - cos(mean TF-IDF row of the reference, mean TF-IDF row of the sample),
                        1.0 when either mean is all zeros (no word in common)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.errors import TunesmithError

EPSILON = 1e-4  # the share an empty bin counts as
LENGTH_BINS = 10  # prompt-length PSI: bins between the training reference's deciles
HELD_OUT_SHARE = 0.2  # of the training prompts, kept out of the reference to measure the baseline
DRAWS = 200  # same-size held-out samples behind each baseline
NOISE_QUANTILE = 0.99  # of those samples' figures: above it, a value is more than chance
SEED = 0  # the split and the samples are fixed: the same store gives the same report
MIN_TRAINING_PROMPTS = 10  # fewer leave no held-out part worth measuring a baseline on
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class DriftThresholds:
    """When a drift figure says "retrain". The PSI defaults are the usual rule of thumb: below 0.1 no
    shift, 0.1 to 0.25 moderate, 0.25 and above a major shift."""

    psi_moderate: float = 0.10
    """PSI below this reads "no shift", up to psi_major "a moderate shift" (words only, never a flag)."""
    psi_major: float = 0.25
    """Prompt-length PSI at or above this flags (and it must lie above a training sample's noise)."""
    unseen_margin: float = 0.10
    """Unseen-vocabulary share flags at baseline + this (absolute share) ..."""
    unseen_ratio: float = 2.0
    """... or at this many times the baseline (when the baseline is above zero)."""
    centroid_ratio: float = 2.0
    """TF-IDF centroid distance flags at this many times the baseline ..."""
    centroid_floor: float = 0.05
    """... and only when it is at least this far (cosine distance), so a near-zero baseline does not flag noise."""
    label_psi: float = 0.25
    """PSI of the predicted label mix against the training label mix, at or above this flags."""
    min_live_prompts: int = 30
    """Below this many live prompts every figure reads "not enough traffic", never a flag."""


@dataclass(frozen=True)
class DriftFigure:
    """One drift figure: its value, its baseline and noise, the rule, and the verdict."""

    name: str
    value: float | None
    baseline: float | None  # mean of the figure over same-size held-out training samples
    noise: float | None  # their 99th percentile
    threshold: str  # the rule, in words
    verdict: str  # "ok", "flag", "not enough traffic" or "not measured"
    flagged: bool
    reason: str  # why it flags (a sentence for the report), or what it says when it does not


# -- the statistics -------------------------------------------------------------------------------
def shares(counts: Sequence[float], epsilon: float = EPSILON) -> np.ndarray:
    """Counts as shares of their total, each share at least `epsilon`."""
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        raise ValueError("shares of an empty sample: give at least one count above zero")
    return np.maximum(counts / total, epsilon)


def psi(expected_counts: Sequence[float], actual_counts: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of `actual` against `expected`, bin by bin (see the module's formula)."""
    expected, actual = shares(expected_counts, epsilon), shares(actual_counts, epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def quantile_edges(reference: Sequence[float], bins: int = LENGTH_BINS) -> np.ndarray:
    """The inner bin edges at the reference's quantiles (1/bins ... (bins-1)/bins), repeated edges
    merged: lengths shared by many prompts make fewer, wider bins rather than empty ones."""
    return np.unique(np.quantile(np.asarray(reference, dtype=float), np.arange(1, bins) / bins))


def bin_counts(values: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """How many values fall in each bin: bin 0 is (-inf, edges[0]], bin i is (edges[i-1], edges[i]],
    the last (edges[-1], inf)."""
    index = np.searchsorted(edges, np.asarray(values, dtype=float), side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def unseen_counts(texts: Sequence[str], vocabulary: set[str]) -> np.ndarray:
    """Per text: (word tokens, word tokens not in `vocabulary`), as an (n, 2) array."""
    counts = [(len(found), sum(word not in vocabulary for word in found)) for found in map(words, texts)]
    return np.asarray(counts, dtype=float).reshape(-1, 2)


def unseen_share(counts: np.ndarray) -> float:
    """Unseen word tokens / all word tokens of the texts behind `counts` (0 when they have no words)."""
    total = counts[:, 0].sum()
    return float(counts[:, 1].sum() / total) if total else 0.0


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(np.dot(a, b)) / norms if norms > 0 else 1.0


def centroid(rows: Any) -> np.ndarray:
    """The mean row of a (sparse or dense) matrix, as a flat array."""
    return np.asarray(rows.mean(axis=0)).ravel()


def tfidf_vectorizer() -> Any:
    """scikit-learn's TfidfVectorizer with its defaults (words of 2+ characters, smooth idf, l2 rows)."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError as error:
        raise TunesmithError("the drift figures need scikit-learn: pip install 'tunesmith[monitor]'") from error
    return TfidfVectorizer()


# -- samples and baselines ------------------------------------------------------------------------
def split_reference(count: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the reference and the held-out parts of `count` training prompts."""
    order = np.random.default_rng([seed, 16]).permutation(count)
    held = max(1, round(HELD_OUT_SHARE * count))
    return np.sort(order[held:]), np.sort(order[:held])


def sample_draws(held_out: int, size: int, seed: int = SEED) -> list[np.ndarray]:
    """DRAWS samples of `size` held-out indices, with replacement (the held-out part may be smaller
    than the live sample)."""
    rng = np.random.default_rng([seed, 17])
    return [rng.integers(0, held_out, size) for _ in range(DRAWS)]


def baseline_of(figures: Sequence[float]) -> tuple[float, float]:
    """(mean, 99th percentile) of a figure over the held-out samples."""
    values = np.asarray(figures, dtype=float)
    return float(values.mean()), float(np.quantile(values, NOISE_QUANTILE))


# -- the figures ----------------------------------------------------------------------------------
def too_little(name: str, value: float | None, baseline: float | None, noise: float | None, threshold: str,
               live: int, thresholds: DriftThresholds, what: str = "live prompts") -> DriftFigure | None:
    """The figure as "not enough traffic" when fewer than the minimum stand behind it (else None)."""
    if live >= thresholds.min_live_prompts:
        return None
    return DriftFigure(name, value, baseline, noise, threshold, "not enough traffic", False,
                       f"{live} {what}, fewer than the {thresholds.min_live_prompts} a verdict needs")


def length_figure(reference: Sequence[int], held_out: Sequence[int], live: Sequence[int], unit: str,
                  thresholds: DriftThresholds) -> DriftFigure:
    name, rule = f"prompt length PSI ({unit})", f">= {thresholds.psi_major} and above a training sample's noise"
    if not live:
        return DriftFigure(name, None, None, None, rule, "not enough traffic", False, "no live prompts")
    edges = quantile_edges(reference)
    expected = bin_counts(reference, edges)
    value = psi(expected, bin_counts(live, edges))
    held = np.asarray(held_out)
    baseline, noise = baseline_of([psi(expected, bin_counts(held[draw], edges))
                                   for draw in sample_draws(len(held), len(live))])
    waiting = too_little(name, value, baseline, noise, rule, len(live), thresholds)
    if waiting:
        return waiting
    flagged = value >= thresholds.psi_major and value > noise
    if flagged:
        reason = (f"prompt length shifted: PSI {value:.2f} >= {thresholds.psi_major} (a training sample of the same size "
                  f"gives {baseline:.2f}, 99% under {noise:.2f}); live prompts average {np.mean(live):.0f} {unit}, "
                  f"training {np.mean(reference):.0f}")
    else:
        reason = f"PSI {value:.2f}: {_psi_words(value, thresholds)}" + (" (within a training sample's noise)"
                                                          if value >= thresholds.psi_major else "")
    return DriftFigure(name, value, baseline, noise, rule, "flag" if flagged else "ok", flagged, reason)


def vocabulary_figure(reference: Sequence[str], held_out: Sequence[str], live: Sequence[str],
                      thresholds: DriftThresholds) -> DriftFigure:
    name = "unseen-vocabulary share"
    rule = (f">= baseline + {thresholds.unseen_margin} or >= {thresholds.unseen_ratio}x baseline, "
            "and above a training sample's noise")
    if not live:
        return DriftFigure(name, None, None, None, rule, "not enough traffic", False, "no live prompts")
    vocabulary = {word for text in reference for word in words(text)}
    value = unseen_share(unseen_counts(live, vocabulary))
    held = unseen_counts(held_out, vocabulary)
    baseline, noise = baseline_of([unseen_share(held[draw]) for draw in sample_draws(len(held), len(live))])
    waiting = too_little(name, value, baseline, noise, rule, len(live), thresholds)
    if waiting:
        return waiting
    over = value >= baseline + thresholds.unseen_margin or (baseline > 0 and value >= thresholds.unseen_ratio * baseline)
    flagged = over and value > noise
    reason = (f"new vocabulary: {value:.0%} of live words never occur in the training prompts (new training text has "
              f"{baseline:.0%})" if flagged else f"{value:.1%} of live words unseen (new training text: {baseline:.1%})")
    return DriftFigure(name, value, baseline, noise, rule, "flag" if flagged else "ok", flagged, reason)


def centroid_figure(reference: Sequence[str], held_out: Sequence[str], live: Sequence[str],
                    thresholds: DriftThresholds) -> DriftFigure:
    name = "TF-IDF centroid distance"
    rule = (f">= {thresholds.centroid_ratio}x baseline, >= {thresholds.centroid_floor} "
            "and above a training sample's noise")
    if not live:
        return DriftFigure(name, None, None, None, rule, "not enough traffic", False, "no live prompts")
    vectorizer = tfidf_vectorizer().fit(reference)
    anchor = centroid(vectorizer.transform(reference))
    value = cosine_distance(anchor, centroid(vectorizer.transform(live)))
    held = vectorizer.transform(held_out)
    baseline, noise = baseline_of([cosine_distance(anchor, centroid(held[draw]))
                                   for draw in sample_draws(held.shape[0], len(live))])
    waiting = too_little(name, value, baseline, noise, rule, len(live), thresholds)
    if waiting:
        return waiting
    flagged = value >= thresholds.centroid_ratio * baseline and value >= thresholds.centroid_floor and value > noise
    reason = (f"different topics: the live prompts' TF-IDF centroid is {value:.2f} from the training one (a training "
              f"sample of the same size: {baseline:.2f})" if flagged
              else f"centroid distance {value:.3f} (a training sample of the same size: {baseline:.3f})")
    return DriftFigure(name, value, baseline, noise, rule, "flag" if flagged else "ok", flagged, reason)


def label_figures(labels: Sequence[str], reference: Sequence[str], held_out: Sequence[str],
                  predicted: Sequence[str | None], thresholds: DriftThresholds) -> list[DriftFigure]:
    """The predicted label mix against the training label mix (PSI over the labels, answers that map
    to no label left out of it), and the share of answers that map to no label (reported, never a flag)."""
    name, rule = "predicted label mix PSI", f">= {thresholds.label_psi} and above a training sample's noise"
    mapped = [label for label in predicted if label is not None]
    unmapped = 1 - len(mapped) / len(predicted) if predicted else None
    unmapped_figure = DriftFigure("answers mapping to no label", unmapped, None, None, "reported, never a flag",
                                  "ok" if predicted else "not enough traffic", False,
                                  f"{len(predicted) - len(mapped)} of {len(predicted)} answers" if predicted else "no answers")
    if not mapped:
        return [DriftFigure(name, None, None, None, rule, "not enough traffic", False, "no answer maps to a label"),
                unmapped_figure]
    expected = label_counts(reference, labels)
    value = psi(expected, label_counts(mapped, labels))
    held = np.asarray(held_out, dtype=object)
    baseline, noise = baseline_of([psi(expected, label_counts(held[draw], labels))
                                   for draw in sample_draws(len(held), len(mapped))])
    waiting = too_little(name, value, baseline, noise, rule, len(mapped), thresholds, "answers that map to a label")
    if waiting:
        return [waiting, unmapped_figure]
    flagged = value >= thresholds.label_psi and value > noise
    live_mix = ", ".join(f"{label} {share:.0%}" for label, share in zip(labels, label_counts(mapped, labels) / len(mapped)))
    train_mix = ", ".join(f"{label} {share:.0%}" for label, share in zip(labels, expected / expected.sum()))
    reason = (f"the answers' label mix shifted: PSI {value:.2f} >= {thresholds.label_psi} (live {live_mix}; training "
              f"{train_mix})" if flagged else f"PSI {value:.2f}: {_psi_words(value, thresholds)} (live {live_mix})")
    return [DriftFigure(name, value, baseline, noise, rule, "flag" if flagged else "ok", flagged, reason), unmapped_figure]


def label_counts(values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    position = {label: number for number, label in enumerate(labels)}
    counts = np.zeros(len(labels))
    for value in values:
        counts[position[value]] += 1
    return counts


def _psi_words(value: float, thresholds: DriftThresholds) -> str:
    return ("no shift" if value < thresholds.psi_moderate else "a moderate shift" if value < thresholds.psi_major
            else "a major shift")
