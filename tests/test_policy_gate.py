"""The publication gate of a newly trained fusion policy (`policy_gate.judge_candidate`)."""

from __future__ import annotations

from charattr_core.evaluation import EvalExample, evaluate
from charattr_core.fusion import FusionContext
from charattr_core.policy_gate import CURRENT_POLICY, judge_candidate
from charattr_core.records import AttributeEstimate
from charattr_core.schema import load_vocabulary

VOCAB = load_vocabulary()


class Always:
    """A strategy chooser that always picks one strategy: a stand-in for a trained policy."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy

    def choose_for(self, attribute, sources, context) -> str:
        return self.strategy


def examples(n: int = 200) -> list[EvalExample]:
    """Tags right and confident, CLIP wrong and unsure: simple averaging follows the tags."""
    colours = ("black", "blonde", "red", "blue")
    out = []
    for i in range(n):
        truth, wrong = colours[i % 4], colours[(i + 1) % 4]
        sources = {"tags": {"hair_color": AttributeEstimate("hair_color", (truth,), 0.9)},
                   "clip": {"hair_color": AttributeEstimate("hair_color", (wrong,), 0.6)}}
        out.append(EvalExample(f"img{i}", sources, FusionContext(), {"hair_color": (truth,)}))
    return out


def judge(candidate: str, current: str | None = None):
    choosers = {CURRENT_POLICY: Always(current)} if current else None
    report = evaluate(examples(), VOCAB, policy=Always(candidate), choosers=choosers, n_bootstrap=200, seed=1)
    return judge_candidate(report, has_current=current is not None)


def test_a_candidate_as_good_as_simple_averaging_is_published():
    verdict = judge("tags_only")
    assert verdict.publish
    [row] = verdict.rows()
    assert row["candidate_minus"] == "simple_average" and not row["significantly_worse"]


def test_a_candidate_worse_than_simple_averaging_is_refused_with_the_comparison():
    verdict = judge("clip_only")
    assert not verdict.publish and "simple_average" in verdict.reason
    [row] = verdict.rows()
    assert row["significantly_worse"] and row["ci_high_points"] < 0 and row["accuracy_difference_points"] == -100.0


def test_a_candidate_worse_than_the_current_policy_is_refused():
    verdict = judge("clip_only", current="tags_only")
    assert not verdict.publish
    assert [r["candidate_minus"] for r in verdict.rows()] == ["simple_average", CURRENT_POLICY]
    assert CURRENT_POLICY in verdict.reason and "stays published" in verdict.reason


def test_no_held_out_images_publishes_without_a_comparison():
    report = evaluate([], VOCAB, policy=Always("tags_only"), n_bootstrap=10)
    verdict = judge_candidate(report, has_current=False)
    assert verdict.publish and verdict.comparisons == () and "no held-out images" in verdict.reason
