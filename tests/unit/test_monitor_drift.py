"""The monitor's drift statistics, each against a computation of its own: PSI by hand and through
scipy's KL divergence, quantile bins by a loop, TF-IDF centroids with numpy from the textbook formula."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

pytest.importorskip("sqlalchemy", reason="the monitor reads the store: pip install -e .[serve]")

from tunesmith.improve.monitor import drift  # noqa: E402
from tunesmith.improve.monitor.drift import DriftThresholds  # noqa: E402


def test_psi_is_the_hand_formula_and_the_symmetric_kl_divergence():
    # shares 0.5/0.3/0.2 against 0.2/0.3/0.5: two terms of 0.3 * ln 2.5
    assert drift.psi([50, 30, 20], [20, 30, 50]) == pytest.approx(2 * 0.3 * math.log(2.5), abs=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    expected, actual = np.array([12, 40, 7, 41]), np.array([30, 22, 19, 9])
    p, q = expected / expected.sum(), actual / actual.sum()
    assert drift.psi(expected, actual) == pytest.approx(scipy_stats.entropy(q, p) + scipy_stats.entropy(p, q), rel=1e-12)
    assert drift.psi(expected, expected * 3) == pytest.approx(0.0, abs=1e-15)


def test_an_empty_bin_counts_as_epsilon_not_infinity():
    value = drift.psi([10, 0], [5, 5])
    by_hand = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert value == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="empty sample"):
        drift.psi([0, 0], [1, 2])


def test_bins_sit_at_the_training_deciles_and_count_like_a_loop():
    rng = np.random.default_rng(3)
    reference = rng.integers(5, 200, 1000)
    edges = drift.quantile_edges(reference)
    assert np.allclose(edges, np.unique(np.quantile(reference, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])))
    values = rng.integers(0, 300, 500)
    by_loop = np.zeros(len(edges) + 1, dtype=int)
    for value in values:  # bin i is (edges[i-1], edges[i]]
        by_loop[sum(value > edge for edge in edges)] += 1
    assert drift.bin_counts(values, edges).tolist() == by_loop.tolist()
    # about a tenth of the reference in each bin
    assert np.all(np.abs(drift.bin_counts(reference, edges) / 1000 - 0.1) < 0.02)
    # many equal lengths merge edges rather than leave bins empty
    assert len(drift.quantile_edges([4] * 50 + [9] * 50)) < 9


def test_unseen_share_counts_word_tokens_not_types():
    vocabulary = {"the", "film", "was", "good"}
    counts = drift.unseen_counts(["The film was GOOD", "the plot was thin thin", ""], vocabulary)
    assert counts.tolist() == [[4, 0], [5, 3], [0, 0]]
    assert drift.unseen_share(counts) == pytest.approx(3 / 9)
    assert drift.unseen_share(np.zeros((0, 2))) == 0.0


def tfidf_by_hand(fit_on: list[str], texts: list[str]) -> np.ndarray:
    """scikit-learn's documented defaults: words of 2+ characters, lowercased, raw counts times
    idf = ln((1 + n) / (1 + df)) + 1, each row scaled to unit length."""
    tokenize = lambda text: re.findall(r"(?u)\b\w\w+\b", text.lower())  # noqa: E731
    vocabulary = sorted({word for text in fit_on for word in tokenize(text)})
    df = np.array([sum(word in tokenize(text) for text in fit_on) for word in vocabulary])
    idf = np.log((1 + len(fit_on)) / (1 + df)) + 1
    rows = np.array([[tokenize(text).count(word) for word in vocabulary] for text in texts], dtype=float) * idf
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def test_centroid_distance_is_one_minus_the_cosine_of_hand_made_tfidf_means():
    pytest.importorskip("sklearn")
    reference = [f"the film was {word} and the cast was {other}" for word in ("good", "bad", "fine", "dull", "great")
                 for other in ("young", "old", "loud")]
    live = ["the invoice was late", "shipping the parcel took a week", "the film was good", "zebra quartz"] * 8
    held_out = reference[:6]
    figure = drift.centroid_figure(reference, held_out, live, DriftThresholds())
    anchor = tfidf_by_hand(reference, reference).mean(axis=0)
    live_mean = tfidf_by_hand(reference, live).mean(axis=0)
    by_hand = 1 - anchor @ live_mean / (np.linalg.norm(anchor) * np.linalg.norm(live_mean))
    assert figure.value == pytest.approx(by_hand, rel=1e-9)
    from sklearn.metrics.pairwise import cosine_distances

    assert figure.value == pytest.approx(cosine_distances([anchor], [live_mean])[0, 0], rel=1e-9)
    assert drift.cosine_distance(np.zeros(3), np.ones(3)) == 1.0  # nothing in common


def test_a_missing_scikit_learn_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(Exception, match=r"pip install 'tunesmith\[monitor\]'"):
        drift.tfidf_vectorizer()


def test_the_label_mix_psi_and_the_unmapped_share():
    labels = ["negative", "positive"]
    reference = ["negative"] * 60 + ["positive"] * 40
    held_out = ["negative"] * 12 + ["positive"] * 8
    predicted = ["positive"] * 36 + ["negative"] * 4 + [None] * 10
    mix, unmapped = drift.label_figures(labels, reference, held_out, predicted, DriftThresholds())
    by_hand = (0.1 - 0.6) * math.log(0.1 / 0.6) + (0.9 - 0.4) * math.log(0.9 / 0.4)
    assert mix.value == pytest.approx(by_hand, rel=1e-12) and mix.flagged and "label mix shifted" in mix.reason
    assert unmapped.value == pytest.approx(10 / 50) and not unmapped.flagged
    same = ["negative"] * 24 + ["positive"] * 16
    assert not drift.label_figures(labels, reference, held_out, same, DriftThresholds())[0].flagged


def test_a_training_sample_of_the_live_size_sets_the_noise_so_small_traffic_does_not_flag_by_chance():
    rng = np.random.default_rng(0)
    reference, held_out = rng.normal(60, 15, 800).round(), rng.normal(60, 15, 200).round()
    thresholds = DriftThresholds()
    small = rng.normal(60, 15, 30).round().tolist()
    figure = drift.length_figure(reference, held_out, small, "tokens", thresholds)
    # 30 prompts from the very same distribution: PSI over 10 bins is large by chance alone ...
    assert figure.baseline > 0.2
    # ... so the flag needs more than that
    assert not figure.flagged and figure.noise > figure.baseline
    long = rng.normal(140, 15, 30).round().tolist()
    shifted = drift.length_figure(reference, held_out, long, "tokens", thresholds)
    assert shifted.flagged and shifted.value > shifted.noise and "prompt length shifted" in shifted.reason
    few = drift.length_figure(reference, held_out, long[:29], "tokens", thresholds)
    assert few.verdict == "not enough traffic" and not few.flagged and few.value is not None


def test_unseen_vocabulary_flags_relative_to_the_baseline():
    reference = [f"the film was {w}" for w in ("good", "bad", "long", "short", "fine")] * 20
    held_out = ["the film was good", "the film was bad", "the film was odd"] * 5  # one new word in three rows
    thresholds = DriftThresholds()
    usual = drift.vocabulary_figure(reference, held_out, ["the film was odd", "the film was good", "the film was bad"] * 12,
                                    thresholds)
    assert usual.baseline == pytest.approx(1 / 12, abs=0.03) and not usual.flagged
    novel = drift.vocabulary_figure(reference, held_out, ["my invoice is late again", "the film was good"] * 20, thresholds)
    assert novel.value == pytest.approx(5 / 9) and novel.flagged


def test_the_reference_split_is_fixed_and_disjoint():
    reference, held_out = drift.split_reference(50)
    again = drift.split_reference(50)
    assert reference.tolist() == again[0].tolist() and len(held_out) == 10
    assert sorted(reference.tolist() + held_out.tolist()) == list(range(50))
