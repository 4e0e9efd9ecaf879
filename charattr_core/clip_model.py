"""`ClipModel`: a loaded open_clip model with its eval transform, ready for read-only inference.

Build one with `charattr_core.clip.load_clip`. Encoding never changes the model, so one
instance can serve several threads at once; the text-embedding cache is guarded by a lock.

Two ways in: `preprocess` (open_clip's eval transform: PIL image -> normalised float tensor) and,
faster, `prepare_pixels` (the same resize and crop, stopping at uint8 pixels) followed by
`encode_tensor` on the stacked pixels, which converts and normalises the whole batch at once on
the model's device. The pixel path gives bit-identical model inputs (the same float32 operations
in the same order), moves a quarter of the bytes to a GPU, and keeps per-image torch work out of
the decode threads, where it would compete with inference for the intra-op thread pool.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from .clip_runtime import FP32, ImageEncoder, InferencePath
from .schema import Vocabulary, iter_prompts

TEXT_BATCH_SIZE = 128  # prompts per text-encoder pass; a vocabulary has a few hundred


def split_preprocess(preprocess: Callable[[Image.Image], torch.Tensor]
                     ) -> tuple[Callable[[Image.Image], Any], tuple[float, ...], tuple[float, ...]] | None:
    """open_clip's eval transform as (its PIL steps, normalisation mean, std), or None if it is not
    `Compose([<PIL steps>..., ToTensor, Normalize])` (then only `preprocess` itself is used)."""
    steps = list(getattr(preprocess, "transforms", None) or ())
    if len(steps) < 2:
        return None
    *pil_steps, to_tensor, normalize = steps
    if not isinstance(to_tensor, T.ToTensor) or not isinstance(normalize, T.Normalize):
        return None
    if any(isinstance(step, (T.ToTensor, T.PILToTensor, T.Normalize, T.ConvertImageDtype)) for step in pil_steps):
        return None
    return T.Compose(pil_steps), tuple(float(m) for m in normalize.mean), tuple(float(s) for s in normalize.std)


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
        inference_path: the runtime and precision the image tower runs in (`clip_runtime.py`).
        inference_note: why that path was chosen (plan, check against fp32, fallback), for logs and metadata.
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[Sequence[str]], torch.Tensor], *, model_name: str, model_key: str,
                 embed_dim: int, device: torch.device, dtype: torch.dtype,
                 inference_path: InferencePath = FP32, image_encoder: ImageEncoder | None = None,
                 inference_note: str = "") -> None:
        self.model = model.eval()
        self.inference_path = inference_path
        self.inference_note = inference_note
        self._image_encoder = image_encoder  # None: the model's own encode_image
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
        self._short_text: bool | None = None  # decided at the first text batch (see _encode_tokens)
        split = split_preprocess(preprocess)
        self._pil_steps = split[0] if split else None
        if split:
            self._mean = torch.tensor(split[1], dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self._std = torch.tensor(split[2], dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def with_image_encoder(self, encoder: ImageEncoder | None, path: InferencePath, base_key: str,
                           note: str) -> "ClipModel":
        """The same model (shared weights, tokenizer and text cache) with its image tower run by
        `encoder` on `path`; the model key names the path."""
        clone = ClipModel(self.model, self.preprocess, self.tokenizer, model_name=self.model_name,
                          model_key=base_key + path.key_suffix, embed_dim=self.embed_dim, device=self.device,
                          dtype=self.dtype, inference_path=path, image_encoder=encoder, inference_note=note)
        return clone

    @property
    def accepts_pixels(self) -> bool:
        """Whether `prepare_pixels` is available (open_clip's usual transform); else use `preprocess`."""
        return self._pil_steps is not None

    def prepare_pixels(self, image: Image.Image) -> np.ndarray:
        """`preprocess` up to, not including, the float conversion: uint8 pixels (H, W, 3).

        Stack these into (N, H, W, 3) and pass them to `encode_tensor`. Raises ValueError when
        the transform does not give an RGB image of the model's input size.
        """
        if self._pil_steps is None:
            raise ValueError("this model's preprocessing cannot be split; use preprocess() instead")
        out = self._pil_steps(image)
        pixels = np.asarray(out) if isinstance(out, Image.Image) and out.mode == "RGB" else None
        if pixels is None or pixels.shape != (*self.image_size, 3):
            got = pixels.shape if pixels is not None else type(out).__name__
            raise ValueError(f"preprocessing gave {got}, not RGB pixels of size {self.image_size}")
        return pixels

    def __repr__(self) -> str:
        return (f"ClipModel({self.model_key!r}, device={self.device}, path={self.inference_path}, "
                f"embed_dim={self.embed_dim})")

    def _autocast(self) -> contextlib.AbstractContextManager:
        # Mixed precision only where it pays; on CPU the model already runs in its own dtype.
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast(device_type="cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def encode_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """Encode a batch -> L2-normalised float32 embeddings (N, embed_dim).

        `batch` is either preprocessed float images (N, 3, H, W) from `preprocess`, or uint8
        pixels (N, H, W, 3) from `prepare_pixels`, which are converted and normalised here, on
        the model's device. On CUDA, pass host tensors in pinned memory (`pin_memory()`) so the
        copy overlaps queued work; unpinned ones are pinned here first.
        """
        pixels = batch.dtype == torch.uint8
        if batch.ndim != 4 or (pixels and batch.shape[-1] != 3) or (not pixels and batch.shape[1] != 3):
            expected = "(N, H, W, 3) uint8 pixels" if pixels else "(N, 3, H, W)"
            raise ValueError(f"expected a batch of shape {expected}, got {tuple(batch.shape)}")
        if len(batch) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            if self.device.type == "cuda" and batch.device.type == "cpu":
                # Pinned host memory lets the copy run asynchronously with the queued kernels.
                if not batch.is_pinned():
                    batch = batch.pin_memory()
                batch = batch.to(self.device, non_blocking=True)
            x = self._normalize_pixels(batch) if pixels else batch.to(self.device, dtype=torch.float32)
            # channels_last only where it pays (see __init__); contiguous otherwise, so CPU results
            # do not depend on which path the batch came through.
            x = x.to(self.dtype).contiguous(
                memory_format=torch.channels_last if self._channels_last else torch.contiguous_format)
            if self._image_encoder is not None:
                features = self._image_encoder(x)
            else:
                with self._autocast():
                    features = self.model.encode_image(x)
            features = F.normalize(features.float(), dim=-1)
        return features.cpu().numpy()

    def _normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, exactly as ToTensor + Normalize compute it."""
        if self._pil_steps is None:
            raise ValueError("this model takes preprocessed float batches (N, 3, H, W), not uint8 pixels")
        x = pixels.to(self.device).permute(0, 3, 1, 2)
        if not self._channels_last:
            x = x.contiguous()  # NCHW in uint8: a quarter of the bytes of reordering the floats
        x = x.to(torch.float32).div_(255)
        return x.sub_(self._mean).div_(self._std)

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
                chunks.append(F.normalize(self._encode_tokens(tokens).float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embed_dim), dtype=np.float32)

    # -- text: only the tokens that matter ------------------------------------------------------
    # CLIP's text tower always runs its full context (77 tokens) although prompts are ~10 tokens
    # and the rest is padding. With causal attention and pooling at the end-of-text token (the
    # highest token id: open_clip's "argmax" pooling), positions after the last end token cannot
    # change the result, so the batch is cut there: ~5x less work for the same embeddings (the
    # prompt ensembles of a vocabulary took 45 s on 2 CPU cores, now ~9 s). The shortcut is used
    # only for open_clip's plain `CLIP` with a causal mask, and is checked once against the full
    # forward pass; any disagreement turns it off.

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._short_text is None:
            self._short_text = self._short_text_agrees(tokens)
        if self._short_text:
            length = int(tokens.argmax(dim=-1).max()) + 1
            if length < tokens.shape[1]:
                return self._encode_text_prefix(tokens[:, :length])
        return self.model.encode_text(tokens)

    def _short_text_agrees(self, tokens: torch.Tensor) -> bool:
        m = self.model
        mask = getattr(m, "attn_mask", None)
        if (type(m).__name__ != "CLIP" or getattr(m, "text_pool_type", None) != "argmax"
                or not isinstance(mask, torch.Tensor) or mask.shape != (tokens.shape[1], tokens.shape[1])
                or getattr(m, "positional_embedding", None) is None):
            return False
        causal = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
        if not torch.equal(torch.isinf(mask) & (mask < 0), causal):
            return False
        sample = tokens[:2]
        length = int(sample.argmax(dim=-1).max()) + 1
        try:
            short = self._encode_text_prefix(sample[:, :length]).float()
        except Exception:  # noqa: BLE001 - an architecture this shortcut does not understand
            return False
        full = m.encode_text(sample).float()
        return bool(torch.allclose(short, full, rtol=1e-3, atol=1e-4 * float(full.abs().max())))

    def _encode_text_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's `CLIP.encode_text` on the first L positions of the context."""
        from open_clip.transformer import text_global_pool

        m, length = self.model, tokens.shape[1]
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast_dtype) + m.positional_embedding[:length].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = text_global_pool(m.ln_final(x), tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if m.text_projection is not None:
            x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return x

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
