"""Train/eval splits by image_id hash, so that the stages that learn never see their test data.

Every image falls into one of 100 buckets, `blake2b(image_id) mod 100`: stable across runs,
machines and shard layouts (it depends only on the id, which is a hash of the bytes), and
independent of the xxh3 hash that made the id. The buckets are shared out like this:

| split               | buckets | used for                                                       |
|---------------------|---------|----------------------------------------------------------------|
| `probe_fit`         | 0–49    | fitting the linear probes (labels: confident tag parses)       |
| `probe_calibration` | 50–59   | the probes' temperature scaling and their calibration metrics  |
| `policy_train`      | 60–79   | training the fusion policy (the probes never saw these images) |
| `holdout`           | 80–99   | evaluating every source, strategy and the policy               |

Why three ways and not two: the policy learns how far to trust the probe, and a probe is
over-confident on the images it was fitted on, so the policy must learn from images the probe has
not seen; the evaluation in turn must use images that neither saw. `probe_fit` +
`probe_calibration` together are "the train split" of the probes. The fused output is still
computed for every image; the splits only decide which images may *teach* which stage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

N_BUCKETS = 100
SPLIT_NAMES = ("probe_fit", "probe_calibration", "policy_train", "holdout")
POLICY_TRAIN = "policy_train"  # the split the fusion policy learns from
HOLDOUT = "holdout"  # the split every evaluation scores; nothing trains on it
PROBE_CALIBRATION = "probe_calibration"  # the split confidences (probes, then every method) are calibrated on


def bucket_of(image_id: str) -> int:
    """The image's bucket in [0, 100): blake2b of the id, so it never changes for a given image."""
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % N_BUCKETS


@dataclass(frozen=True)
class SplitPlan:
    """Bucket boundaries: [0, probe_fit_end) probe_fit, then calibration, policy_train, holdout."""

    probe_fit_end: int = 50
    probe_calibration_end: int = 60
    policy_train_end: int = 80

    def __post_init__(self) -> None:
        if not 0 < self.probe_fit_end <= self.probe_calibration_end <= self.policy_train_end < N_BUCKETS:
            raise ValueError(f"Split boundaries must satisfy 0 < fit <= calibration <= policy < {N_BUCKETS}.")

    def split_of_bucket(self, bucket: int) -> str:
        if bucket < self.probe_fit_end:
            return "probe_fit"
        if bucket < self.probe_calibration_end:
            return "probe_calibration"
        if bucket < self.policy_train_end:
            return "policy_train"
        return "holdout"

    def split_of(self, image_id: str) -> str:
        return self.split_of_bucket(bucket_of(image_id))

    def buckets(self, split: str) -> range:
        """The bucket range of one split (for leakage checks and documentation)."""
        bounds = {"probe_fit": (0, self.probe_fit_end),
                  "probe_calibration": (self.probe_fit_end, self.probe_calibration_end),
                  "policy_train": (self.probe_calibration_end, self.policy_train_end),
                  "holdout": (self.policy_train_end, N_BUCKETS)}
        if split not in bounds:
            raise ValueError(f"Unknown split {split!r}; choose one of: {', '.join(SPLIT_NAMES)}.")
        return range(*bounds[split])


DEFAULT_SPLITS = SplitPlan()


def split_of(image_id: str, plan: SplitPlan = DEFAULT_SPLITS) -> str:
    """`probe_fit`, `probe_calibration`, `policy_train` or `holdout` for this image."""
    return plan.split_of(image_id)


def is_probe_train(image_id: str, plan: SplitPlan = DEFAULT_SPLITS) -> bool:
    """True for the probes' train split (fit + calibration buckets)."""
    return plan.split_of(image_id) in ("probe_fit", "probe_calibration")
