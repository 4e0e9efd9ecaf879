"""The version of the `clip_embeddings` stage, importable without torch.

Kept apart from `clip.py` so that a run with CLIP disabled (or a fully cached one) can compute
its stage versions without importing torch, open_clip and torchvision (seconds of start-up and a
few hundred MB of memory).
"""

from __future__ import annotations

CLIP_CODE_VERSION = 1  # bump when decoding/preprocessing/encoding changes the embeddings


def clip_stage_version(model_key: str) -> str:
    """Stage version of `clip_embeddings`, e.g. `clip-1+ViT-B-32/openai`."""
    return f"clip-{CLIP_CODE_VERSION}+{model_key}"
