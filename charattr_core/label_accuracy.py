"""Accuracy of finished answers against labels, for the attribute report.

Only held-out images count (`splits.HOLDOUT`): the probes and the fusion policy were trained on
the other splits, so scoring the product there would credit the learned stages with answers they
had been shown. An `unknown` answer counts as wrong (scores 0), and a multi-valued attribute
scores the Jaccard overlap of the value sets — the same `evaluation.answer_score` as the fusion
evaluation and the policy's reward.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from .evaluation import answer_score
from .schema import UNKNOWN, Vocabulary
from .splits import HOLDOUT, split_of

SCOPE = ("held-out images only (the `holdout` split, which no probe or policy was trained on); "
         "an `unknown` answer counts as wrong; multi-valued attributes score the Jaccard overlap")


class HeldOutAccuracy:
    """Per attribute: the summed answer scores and the number of labelled held-out images."""

    def __init__(self, vocabulary: Vocabulary, labels: Mapping[str, Mapping[str, Sequence[str]]]) -> None:
        self.vocabulary = vocabulary
        self.labels = labels
        self.score: Counter[str] = Counter()
        self.count: Counter[str] = Counter()
        self.images = 0  # labelled held-out images seen
        self.excluded = 0  # labelled images of the training splits, left out

    def add(self, image_id: str, answers: Mapping[str, Sequence[str]]) -> None:
        """One image's answers (attribute -> values; empty or `(unknown,)` for no answer)."""
        labels = self.labels.get(image_id)
        if not labels:
            return
        if split_of(image_id) != HOLDOUT:
            self.excluded += 1
            return
        self.images += 1
        for attr in self.vocabulary.attributes:
            label = labels.get(attr.key)
            if not label:
                continue
            values = tuple(answers.get(attr.key) or ())
            answered = () if values in ((), (UNKNOWN,)) else values
            self.count[attr.key] += 1
            self.score[attr.key] += answer_score(answered, tuple(label), attr.multi)

    def accuracy(self) -> dict[str, tuple[float, int]]:
        """attribute -> (accuracy, labelled held-out images), for attributes with any."""
        return {k: (self.score[k] / n, n) for k, n in self.count.items() if n}
