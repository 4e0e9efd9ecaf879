"""Which trained artefacts a run may use, and which signals it used.

Probes read embeddings of one CLIP model, and a fusion policy learnt its choices from contexts
that one CLIP model produced; both are made for one vocabulary. They record that model and
vocabulary, and a run with another model, another vocabulary or no CLIP at all leaves them out
(never applies, labels or reports them) and says why. Missing or unreadable files stay
`ConfigError`s: the caller decides whether that stops the run (a path the user gave) or is
normal (nothing trained yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArtifactMismatchError
from .schema import Vocabulary

NO_CLIP_FOR_PROBES = "CLIP is not used, and the probes read CLIP embeddings"


def usable_probes(path: str | Path, vocabulary: Vocabulary, model_key: str | None):
    """`(probes, None)` when the probes at `path` fit this model and vocabulary, else `(None, reason)`."""
    from .probes import AttributeProbes

    if model_key is None:
        return None, NO_CLIP_FOR_PROBES
    try:
        probes = AttributeProbes.load(path, vocabulary, model_key)
    except ArtifactMismatchError as exc:
        return None, str(exc).rstrip(".")
    if not probes.heads:
        return None, "no attribute had enough confident tags to train a probe"
    return probes, None


def usable_policy(path: str | Path, vocabulary: Vocabulary, model_key: str | None):
    """`(policy, None)` when the policy at `path` fits this model and vocabulary, else `(None, reason)`."""
    from .policy import FusionPolicy

    try:
        policy = FusionPolicy.load(path, vocabulary)
    except ArtifactMismatchError as exc:
        return None, str(exc).rstrip(".")
    reason = policy.unusable_reason(model_key)
    return (None, reason) if reason else (policy, None)


@dataclass
class SignalsUsed:
    """What one run fused from: tags, CLIP (which model), probes, policy, and why one was missing."""

    clip_model: str | None = None
    probes: str | None = None  # the probes' version when used
    policy: str | None = None  # the policy's version when used
    strategy: str = "confidence_weighted"  # the fixed strategy when no policy decides
    calibration: str | None = None  # the policy's `calibration_state()` when a policy is used
    missing: dict[str, str] = field(default_factory=dict)  # signal -> why it was not used
    refused: set[str] = field(default_factory=set)  # artefacts that exist but do not fit this run

    def use_policy(self, policy) -> None:
        """A policy fuses this run: record its version and whether it calibrates confidences."""
        self.policy = policy.version
        self.calibration = policy.calibration_state()

    def refuse(self, name: str, reason: str) -> None:
        self.missing[name] = reason
        self.refused.add(name)

    def describe(self) -> dict[str, str]:
        """One line per signal, e.g. {"clip": "used: ViT-B-32/openai", "policy": "not used: ..."}, and
        whether confidences are calibrated (only a policy carries a calibration)."""
        def line(name: str, used: str | None) -> str:
            return f"used: {used}" if used else f"not used: {self.missing.get(name, 'not configured')}"

        return {"tags": "used: each image's own tags (sidecar, column or tar member)",
                "clip": line("clip", self.clip_model), "probes": line("probes", self.probes),
                "policy": line("policy", self.policy) if self.policy or self.missing.get("policy")
                else f"not used: the fixed strategy {self.strategy} decides",
                "calibration": self.calibration if self.policy and self.calibration
                else "uncalibrated: no fusion policy in use, so confidences are raw"}

    def notes(self) -> tuple[str, ...]:
        """Notes for each fused row: why existing probes or a policy were left out (CLIP has its own note)."""
        return tuple(f"{name} not used: {self.missing[name]}" for name in sorted(self.refused))
