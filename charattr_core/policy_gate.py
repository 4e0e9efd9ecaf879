"""Whether a newly trained fusion policy may replace the published one.

A candidate is published only if, on the held-out images, it is not worse than simple averaging
and not worse than the policy in use now (when there is one). "Worse" means significantly worse:
the 95% paired-bootstrap interval of the accuracy difference lies entirely below zero. A point
estimate a few tenths lower is noise on a few hundred images, and rejecting on it would freeze
the policy at whichever version happened to draw a lucky evaluation.

The `fusion_policy` asset publishes on this verdict and reports it as its blocking check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .evaluation import OVERALL, Comparison, EvalReport
from .fusion import LEARNED_POLICY

CURRENT_POLICY = "current_policy"  # the published policy's method name in the candidate's evaluation
REFERENCE_BASELINE = "simple_average"


@dataclass(frozen=True)
class PolicyVerdict:
    """The decision and the comparisons behind it (candidate minus reference, overall accuracy)."""

    publish: bool
    reason: str
    comparisons: tuple[Comparison, ...]

    def rows(self) -> list[dict[str, object]]:
        """One row per comparison, for a table in the check's metadata."""
        return [{"candidate_minus": c.b, "accuracy_difference_points": round(100 * c.margin, 2),
                 "ci_low_points": round(100 * c.low, 2), "ci_high_points": round(100 * c.high, 2),
                 "significantly_worse": _worse(c)} for c in self.comparisons]


def _worse(c: Comparison) -> bool:
    return not math.isnan(c.high) and c.high < 0


def judge_candidate(report: EvalReport, *, has_current: bool) -> PolicyVerdict:
    """Publish or keep the current policy, from an evaluation that scored the candidate as
    `learned_policy` and (when `has_current`) the published policy as `current_policy`."""
    if report.n_images == 0:
        return PolicyVerdict(True, "no held-out images to compare on; published without a comparison", ())
    references = [REFERENCE_BASELINE] + ([CURRENT_POLICY] if has_current else [])
    comparisons = tuple(report.compare(LEARNED_POLICY, ref, OVERALL) for ref in references)
    worse = [c for c in comparisons if _worse(c)]
    if worse:
        return PolicyVerdict(False, "; ".join(str(c) for c in worse) + ": the current policy stays published",
                             comparisons)
    return PolicyVerdict(True, "; ".join(str(c) for c in comparisons), comparisons)
