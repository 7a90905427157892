"""Entity-level scores for token classification, as seqeval defines them (its default mode, the
CoNLL-2000 conlleval rules): an entity counts as found only when its type and both boundaries
match. Our own few lines instead of the seqeval package, which pulls in scikit-learn; a test pins
every figure against seqeval's own on the same tag sequences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tunesmith.data.spans import tags_to_entities


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro and macro precision/recall/F1, per entity type, token accuracy, and a confusion of
    types over spans found with the right boundaries (gold type -> predicted type -> count)."""
    gold_spans, predicted_spans = set(), set()
    tokens = right = 0
    for row, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        gold_spans |= {(row, *entity) for entity in tags_to_entities(list(gold_tags))[0]}
        predicted_spans |= {(row, *entity) for entity in tags_to_entities(list(predicted_tags))[0]}
        tokens += len(gold_tags)
        right += sum(g == p for g, p in zip(gold_tags, predicted_tags))
    types = sorted({span[3] for span in gold_spans | predicted_spans})
    per_type = {kind: _prf(len({s for s in gold_spans & predicted_spans if s[3] == kind}),
                           sum(s[3] == kind for s in predicted_spans), sum(s[3] == kind for s in gold_spans))
                for kind in types}
    micro = _prf(len(gold_spans & predicted_spans), len(predicted_spans), len(gold_spans))
    macro = {key: sum(v[key] for v in per_type.values()) / len(per_type) if per_type else 0.0
             for key in ("precision", "recall", "f1")}
    by_boundaries = {span[:3]: span[3] for span in predicted_spans}
    confusion = Counter((span[3], by_boundaries[span[:3]]) for span in gold_spans if span[:3] in by_boundaries)
    return {"micro": micro, "macro": macro, "per_type": per_type, "token_accuracy": right / tokens if tokens else 0.0,
            "confusion": {f"{g} -> {p}": n for (g, p), n in sorted(confusion.items())}}
