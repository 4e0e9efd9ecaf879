"""`ClipModel`: a loaded open_clip model with its eval transform, ready for read-only inference.

Build one with `charattr_core.clip.load_clip`. Encoding never changes the model, so one
instance can serve several threads at once; the text-embedding cache is guarded by a lock.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .schema import Vocabulary, iter_prompts

TEXT_BATCH_SIZE = 256  # prompts per text-encoder pass; a vocabulary has a few hundred


class ClipModel:
    """An open_clip model in eval mode plus what it takes to feed it.

    Attributes:
        model_key: identity of the weights, part of every stage version
            (`"ViT-B-32/openai"`, `"charattr-tiny/random"`, `"ViT-B-32/file:<hash>"`).
        model_name: the open_clip architecture name.
        embed_dim: length of an embedding.
        device: where the model runs.
        dtype: the weights' dtype (float32, or float16/bfloat16 on an accelerator).
        image_size: (height, width) the visual tower takes.
        preprocess: open_clip's eval transform, PIL image -> float tensor (3, H, W).
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[Sequence[str]], torch.Tensor], *, model_name: str, model_key: str,
                 embed_dim: int, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.model_key = model_key
        self.embed_dim = embed_dim
        self.device = device
        self.dtype = dtype
        size = getattr(model.visual, "image_size", 224)
        self.image_size: tuple[int, int] = tuple(size) if isinstance(size, (tuple, list)) else (size, size)  # type: ignore[assignment]
        # channels_last speeds up the convolutions on CUDA (all of a ResNet/ConvNeXt tower, the
        # patch embedding of a ViT); on CPU it only costs a copy.
        self._channels_last = device.type == "cuda"
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The model's own learned temperature (~100 for trained CLIP, ~14 at initialisation):
        # zero-shot probabilities are only as sharp as the model has earned.
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp().clamp(max=100.0)) if isinstance(scale, torch.Tensor) else 100.0
        self._text_cache: dict[str, dict[str, np.ndarray]] = {}
        self._text_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClipModel({self.model_key!r}, device={self.device}, dtype={self.dtype}, embed_dim={self.embed_dim})"

    def _autocast(self) -> contextlib.AbstractContextManager:
        # Mixed precision only where it pays; on CPU the model already runs in its own dtype.
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast(device_type="cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def encode_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Encode preprocessed images (N, 3, H, W) -> L2-normalised float32 embeddings (N, embed_dim)."""
        if batch.ndim != 4:
            raise ValueError(f"expected a batch of shape (N, 3, H, W), got {tuple(batch.shape)}")
        if len(batch) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            if self.device.type == "cuda" and batch.device.type == "cpu":
                # Pinned host memory lets the copy run asynchronously with the queued kernels.
                if not batch.is_pinned():
                    batch = batch.pin_memory()
                batch = batch.to(self.device, non_blocking=True)
            x = batch.to(self.device, dtype=self.dtype)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features = self.model.encode_image(x)
            features = F.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and encode PIL images -> L2-normalised float32 embeddings (N, embed_dim)."""
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.encode_tensor(torch.stack([self.preprocess(im) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode text prompts -> L2-normalised float32 embeddings (N, embed_dim)."""
        chunks = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(texts), TEXT_BATCH_SIZE):
                tokens = self.tokenizer(list(texts[start:start + TEXT_BATCH_SIZE])).to(self.device)
                chunks.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embed_dim), dtype=np.float32)

    def text_embeddings(self, vocabulary: Vocabulary) -> dict[str, np.ndarray]:
        """Per attribute, one L2-normalised text embedding per value: `{key: (n_values, embed_dim)}`.

        Each value's embedding is a prompt ensemble: every prompt of the value rendered through
        every template of the vocabulary, encoded, averaged and re-normalised (CLIP's standard
        zero-shot recipe). Rows follow `Attribute.value_names`; `unknown` has no row. Cached per
        vocabulary fingerprint (the model key is fixed per instance); the arrays are read-only
        because they are shared between callers.
        """
        with self._text_lock:
            cached = self._text_cache.get(vocabulary.fingerprint)
            if cached is None:
                cached = self._compute_text_embeddings(vocabulary)
                self._text_cache[vocabulary.fingerprint] = cached
        return cached

    def _compute_text_embeddings(self, vocabulary: Vocabulary) -> dict[str, np.ndarray]:
        prompts: list[str] = []
        spans: list[tuple[str, int, int]] = []  # (attribute, first prompt row, end row) per value
        for attribute in vocabulary.attributes:
            for value in attribute.values:
                rendered = iter_prompts(attribute, value, vocabulary.prompt_templates)
                spans.append((attribute.key, len(prompts), len(prompts) + len(rendered)))
                prompts.extend(rendered)
        encoded = self.encode_texts(prompts)  # one pass over all prompts of all attributes
        rows: dict[str, list[np.ndarray]] = {a.key: [] for a in vocabulary.attributes}
        for key, start, end in spans:
            rows[key].append(encoded[start:end].mean(axis=0))
        out: dict[str, np.ndarray] = {}
        for key, vectors in rows.items():
            matrix = np.stack(vectors).astype(np.float32)
            matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
            matrix.setflags(write=False)
            out[key] = matrix
        return out
