"""The trained artefacts (probes, fusion policy) as the product may use them: only those made for
the run's CLIP model and vocabulary, with the reason when one is left out (see
`charattr_core.artifact_use`)."""

from __future__ import annotations

from charattr_core.artifact_use import SignalsUsed, usable_policy, usable_probes
from charattr_core.errors import ConfigError
from charattr_core.schema import Vocabulary

from .asset_keys import ATTRIBUTE_PROBES, FUSION_POLICY
from .warehouse import Warehouse


def _in_use(warehouse: Warehouse, asset: str, file_name: str, absent: str, usable, vocabulary: Vocabulary,
            model_key: str | None):
    folder = warehouse.asset_dir(asset)
    if not (folder / file_name).is_file():
        return None, absent, False
    try:
        artefact, why = usable(folder, vocabulary, model_key)
    except ConfigError as exc:
        artefact, why = None, str(exc).rstrip(".")
    return artefact, why, artefact is None


def probes_in_use(warehouse: Warehouse, vocabulary: Vocabulary, model_key: str | None):
    """`(probes, None, refused)`: the probes, or None with why not — none trained yet
    (`refused` False), or unreadable or made for another CLIP model or vocabulary (True)."""
    return _in_use(warehouse, ATTRIBUTE_PROBES, "probes.json", "attribute_probes has not been trained yet",
                   usable_probes, vocabulary, model_key)


def policy_in_use(warehouse: Warehouse, vocabulary: Vocabulary, model_key: str | None):
    """`(policy, None, refused)`: the published policy, or None with why not — none published yet
    (`refused` False), or unreadable or made for another CLIP model or vocabulary (True)."""
    return _in_use(warehouse, FUSION_POLICY, "policy.json", "fusion_policy has not published a policy yet",
                   usable_policy, vocabulary, model_key)


def signals_in_use(warehouse: Warehouse, vocabulary: Vocabulary, model_key: str | None, clip_unavailable: str | None,
                   use_policy: bool, strategy: str):
    """(probes, policy, SignalsUsed) for a fused_attributes run."""
    signals = SignalsUsed(clip_model=model_key, strategy=strategy)
    if clip_unavailable:
        signals.missing["clip"] = clip_unavailable
    probes, why, refused = probes_in_use(warehouse, vocabulary, model_key)
    if probes is not None:
        signals.probes = probes.probes_version
    elif refused:
        signals.refuse("probes", why)
    else:
        signals.missing["probes"] = why
    policy = None
    if use_policy:
        policy, why, refused = policy_in_use(warehouse, vocabulary, model_key)
        if policy is not None:
            signals.use_policy(policy)
        elif refused:
            signals.refuse("policy", why)
        else:
            signals.missing["policy"] = why
    else:
        signals.missing["policy"] = f"the learned policy is switched off; the fixed strategy {strategy} decides"
    return probes, policy, signals
