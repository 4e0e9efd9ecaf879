"""Adapting CLIP to a collection from its own tags (`charattr train-clip`).

Contrastive training of an open_clip model on (image, caption) pairs. The caption is written
from the image's *tag parse* through the vocabulary's prompts ("a drawing of a girl, long hair,
blonde hair"), never from any ground truth, so the recipe works on any tagged collection. The
model, its transforms and the loss are open_clip's (`create_model_and_transforms`, `ClipLoss`);
the optimiser and the learning-rate schedule are torch's (AdamW, OneCycleLR).

Only the `probe_fit` split (`splits.py`) teaches the model: the probes' calibration images, the
policy's training images and the held-out images stay unseen by it, so every later stage sees the
model as it behaves on new images (a model is more confident on images it was trained on).

The output directory holds `adapted_clip.safetensors` and `adapted_clip.json` (architecture,
resolution, training settings, vocabulary fingerprint, a fingerprint of the training images and
their tags, and the weights' digest). `resolve_adapted_model(DIR)` reads it back: the
architecture to build, the weights file and a model key `ARCH/adapted:<digest>` that changes
with the data, the settings and the weights, so caches and code versions follow the model.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import xxhash

from .errors import ConfigError
from .records import UNKNOWN, TagParse
from .schema import Vocabulary
from .splits import DEFAULT_SPLITS, SplitPlan

log = logging.getLogger(__name__)

# model_configs/charattr-small.json: a small ModifiedResNet image tower at 96 px and a 2-layer text
# tower. Convolutions learn colours and shapes from a few thousand images much faster than a ViT:
# on 5,000 synthetic images (30 epochs, 64 px) its zero-shot accuracy was 34.9 % against 27.1 % for
# a 3-layer ViT, at less time per epoch; 96 px rather than 64 px raised it to 37.2 %.
SMALL_MODEL = "charattr-small"
TRAIN_SPLITS = ("probe_fit",)  # the only images that may teach the adapted model (see the module docstring)
CONFIG_FILE = "adapted_clip.json"
WEIGHTS_FILE = "adapted_clip.safetensors"
ARCH_CONFIG_DIR = "model_config"  # a derived architecture (other resolution) is written here
FORMAT = "charattr-adapted-clip/1"
CAPTION_MIN_CONFIDENCE = 0.5  # tag answers below this (weak hints only) do not go into captions


@dataclass(frozen=True)
class TrainingSettings:
    """What `train_clip` does; recorded in the output JSON (and so in the model key)."""

    model_name: str = SMALL_MODEL
    pretrained: str | None = None  # None: from scratch (seeded); else an open_clip tag or checkpoint file
    epochs: int = 30  # from scratch on 5,000 images (~2,200 in probe_fit): minutes on 2 CPU cores
    resolution: int | None = None  # None: the architecture's own; only from scratch may it differ
    batch_size: int = 64
    learning_rate: float | None = None  # None: 5e-4 from scratch, 1e-5 when fine-tuning
    weight_decay: float = 0.1
    seed: int = 0
    max_images: int | None = None  # at most this many training images (in source order)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1 (got {self.epochs}).")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 for a contrastive loss (got {self.batch_size}).")
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise ConfigError(f"resolution must be between 16 and 1024 pixels (got {self.resolution}).")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1) (got {self.learning_rate}).")
        if self.max_images is not None and self.max_images < 2:
            raise ConfigError(f"max_images must be at least 2 (got {self.max_images}).")

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        # From scratch: 5e-4 with OneCycle's warm-up lowered charattr-small's loss steadily over 30
        # epochs of 64-image batches; fine-tuning pretrained weights needs a rate ~50x smaller.
        return 5e-4 if self.pretrained is None else 1e-5


# --------------------------------------------------------------------------------------------
# captions from tags


def caption_phrases(parse: TagParse | None, vocabulary: Vocabulary,
                    min_confidence: float = CAPTION_MIN_CONFIDENCE) -> list[tuple[str, ...]]:
    """Per value the tags state (confidently enough), that value's prompts: what a caption may say."""
    if parse is None:
        return []
    phrases = []
    for key in vocabulary.keys:
        estimate = parse.estimates.get(key)
        if estimate is None or estimate.is_unknown or estimate.confidence < min_confidence:
            continue
        attribute = vocabulary.attribute(key)
        for name in estimate.values:
            if name != UNKNOWN and name in attribute.value_names:
                phrases.append(attribute.value(name).prompts)
    return phrases


def make_caption(phrases: Sequence[tuple[str, ...]], templates: Sequence[str], rng: random.Random) -> str:
    """One caption: a random non-empty subset of the phrases, in random order, one prompt each,
    through one of the vocabulary's templates (so zero-shot prompts look like training captions)."""
    kept = [p for p in phrases if rng.random() < 0.6] or [rng.choice(phrases)]
    rng.shuffle(kept)
    return rng.choice(templates).format(", ".join(rng.choice(p) for p in kept))


# --------------------------------------------------------------------------------------------
# training data


@dataclass
class TrainingImage:
    image_id: str
    data: bytes
    phrases: list[tuple[str, ...]]
    raw_tags: str


@dataclass
class TrainingData:
    images: list[TrainingImage]
    skipped: dict[str, int] = field(default_factory=dict)  # why images were not used -> count

    @property
    def fingerprint(self) -> str:
        """Digest of the training images and their tags, in id order (independent of shard layout)."""
        digest = xxhash.xxh3_128()
        for image in sorted(self.images, key=lambda i: i.image_id):
            digest.update(image.image_id.encode())
            digest.update(b"\0")
            digest.update(image.raw_tags.encode("utf-8", "surrogatepass"))
            digest.update(b"\1")
        return digest.hexdigest()[:16]


def in_training_split(image_id: str, plan: SplitPlan = DEFAULT_SPLITS) -> bool:
    """True only for images that may teach the adapted model."""
    return plan.split_of(image_id) in TRAIN_SPLITS


def training_data(rows: Iterable[tuple[str, bytes | None, str | None, TagParse | None]], vocabulary: Vocabulary, *,
                  max_images: int | None = None, keep: Callable[[str], bool] = in_training_split) -> TrainingData:
    """Select the training pairs from (image_id, bytes, raw tags, tag parse) rows.

    Images outside the training split, without bytes or without a usable tag are left out
    (counted in `skipped`). The Dagster asset and the CLI both feed this function.
    """
    out = TrainingData([])
    seen: set[str] = set()

    def skip(reason: str) -> None:
        out.skipped[reason] = out.skipped.get(reason, 0) + 1

    for image_id, data, raw_tags, parse in rows:
        if not image_id or data is None:
            skip("unreadable")
        elif not keep(image_id):
            skip("not in the training split")
        elif image_id in seen:
            skip("duplicate image")
        else:
            phrases = caption_phrases(parse, vocabulary)
            if not phrases:
                skip("no attribute tag to caption")
                continue
            seen.add(image_id)
            out.images.append(TrainingImage(image_id, data, phrases, raw_tags or ""))
            if max_images is not None and len(out.images) >= max_images:
                break
    return out


def rows_from_source(source_path: str | Path, vocabulary: Vocabulary, max_image_pixels: int | None = None, *,
                     tag_parses: Callable[[list], list[TagParse]] | None = None, batch_size: int = 256
                     ) -> Iterator[tuple[str, bytes | None, str | None, TagParse | None]]:
    """(image_id, bytes, raw tags, tag parse) for every readable image of a source, streamed in batches.

    `tag_parses(records)` parses a batch of ok records; the CLI passes the pipeline's, which goes
    through the results cache (`--database-url`), so `charattr run` and `train-clip` parse a tag
    set once. By default the tags are parsed here, without a cache."""
    from .batching import batched
    from .sources import inspect_image, open_source
    from .tags import TagParser, parse_tags

    if tag_parses is None:
        parser = TagParser(vocabulary)
        tag_parses = lambda records: list(parse_tags(records, parser))  # noqa: E731
    source = open_source(source_path)
    items = (item for shard in source.shards() for item in source.read(shard))
    for batch in batched(items, batch_size):
        records = [inspect_image(item, max_image_pixels) if max_image_pixels else inspect_image(item) for item in batch]
        ok = [(record, item) for record, item in zip(records, batch) if record.ok]
        parses = iter(tag_parses([record for record, _item in ok]) if ok else ())
        for record, item in zip(records, batch):
            if record.ok:
                yield record.image_id, item.data, item.tags, next(parses)
            else:
                yield record.image_id or "", None, None, None


# --------------------------------------------------------------------------------------------
# the model


def _build(settings: TrainingSettings, allow_download: bool | None = None):
    """-> (model, train transform, architecture name to record, architecture config)."""
    import open_clip
    import torch

    from .clip_loading import load_clip, register_model_configs

    register_model_configs()
    arch_cfg = open_clip.get_model_config(settings.model_name)
    if arch_cfg is None or settings.model_name.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(f"Unknown CLIP model {settings.model_name!r}; use an open_clip architecture such as "
                          f"{SMALL_MODEL} or ViT-B-32.")
    native = arch_cfg["vision_cfg"]["image_size"]
    resolution = settings.resolution or native
    if settings.pretrained is not None:
        if resolution != native:
            raise ConfigError(f"Fine-tuning keeps {settings.model_name}'s resolution ({native} px); drop --resolution "
                              "or train from scratch.")
        clip = load_clip(settings.model_name, settings.pretrained, device="cpu", precision="fp32", runtime="torch",
                         allow_download=allow_download)
        model = clip.model
        from open_clip.transform import PreprocessCfg, image_transform_v2

        train_transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)
        return model, train_transform, settings.model_name, arch_cfg
    with torch.random.fork_rng(devices=[]), _quiet_root_warnings():
        torch.manual_seed(settings.seed)
        model, train_transform, _ = open_clip.create_model_and_transforms(
            settings.model_name, pretrained=None, force_image_size=resolution if resolution != native else None)
    name = settings.model_name if resolution == native else f"{settings.model_name}-{resolution}px"
    cfg = json.loads(json.dumps(arch_cfg))
    cfg["vision_cfg"]["image_size"] = resolution
    return model, train_transform, name, cfg


class _quiet_root_warnings:
    """open_clip warns "No pretrained weights loaded" on the root logger; from scratch, that is the point."""

    def __enter__(self):
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)


def _param_groups(model, weight_decay: float) -> list[dict]:
    # open_clip's convention: no weight decay on gains, biases, embeddings and the logit scale.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
         or "embedding" in name or "token" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class TrainingResult:
    out_dir: Path
    model_name: str
    model_key: str
    n_images: int
    epoch_losses: list[float]
    skipped: dict[str, int]


def train_clip(data: TrainingData, vocabulary: Vocabulary, out_dir: str | Path,
               settings: TrainingSettings = TrainingSettings(), *, progress: bool = True,
               device: str = "cpu", allow_download: bool | None = None) -> TrainingResult:
    """Train on `data` (already restricted to the training split) and write the model to `out_dir`.

    `device` ("cpu", "auto", "cuda", ...) is where the steps run; it is not part of the model key
    (the same recipe on another device is the same model, up to floating-point order)."""
    import open_clip
    import torch
    from open_clip.loss import ClipLoss
    from PIL import Image
    from safetensors.torch import save_file
    from tqdm import tqdm

    settings.validate()
    if len(data.images) < 2:
        raise ConfigError(f"Only {len(data.images)} training image(s) with usable tags in the training split; "
                          "contrastive training needs at least 2 (skipped: "
                          f"{', '.join(f'{n} {r}' for r, n in data.skipped.items()) or 'none'}).")
    out = _model_dir(out_dir)
    adapted = resolve_adapted_model(settings.pretrained)
    if adapted is not None:  # continue from an earlier train-clip directory: its architecture and weights
        settings = replace(settings, model_name=adapted.model_name, pretrained=str(adapted.checkpoint))
    from .clip_loading import resolve_device

    model, transform, arch_name, arch_cfg = _build(settings, allow_download)
    tokenizer = open_clip.get_tokenizer(settings.model_name)
    torch_device = resolve_device(device)
    model.to(torch_device).train()
    rng = random.Random(settings.seed)
    batch_size = min(settings.batch_size, len(data.images))
    steps_per_epoch = len(data.images) // batch_size  # full batches only: a tiny last batch makes a noisy step
    optimizer = torch.optim.AdamW(_param_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                    total_steps=steps_per_epoch * settings.epochs, pct_start=0.1)
    loss_fn = ClipLoss()
    templates = vocabulary.prompt_templates
    losses: list[float] = []
    started = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for epoch in range(settings.epochs):
            order = list(range(len(data.images)))
            rng.shuffle(order)
            total = 0.0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{settings.epochs}", unit="batch",
                       disable=None if progress else True,  # None: no bar when stderr is not a terminal
                       file=sys.stderr, leave=False)
            for step in bar:
                batch = [data.images[i] for i in order[step * batch_size:(step + 1) * batch_size]]
                images = torch.stack([transform(Image.open(io.BytesIO(b.data)).convert("RGB")) for b in batch])
                texts = tokenizer([make_caption(b.phrases, templates, rng) for b in batch])
                image_features, text_features, logit_scale = model(images.to(torch_device), texts.to(torch_device))[:3]
                loss = loss_fn(image_features, text_features, logit_scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                with torch.no_grad():  # CLIP's clamp: a temperature past 100 destabilises training
                    model.logit_scale.clamp_(0, math.log(100))
                value = loss.item()
                total += value
                bar.set_postfix(loss=f"{value:.3f}")
            bar.close()
            losses.append(total / max(steps_per_epoch, 1))
            if progress:
                print(f"epoch {epoch + 1}/{settings.epochs}: loss {losses[-1]:.4f}", file=sys.stderr)
    model.to("cpu").eval()
    with _folder_lock(out):  # two runs into one folder: each writes all its files, the last one wins
        # An earlier model's description goes first: a kill while the new weights are written leaves
        # a folder that is no model (train again), never old metadata beside new weights.
        (out / CONFIG_FILE).unlink(missing_ok=True)
        weights = out / WEIGHTS_FILE
        tmp = weights.with_suffix(".tmp")
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(weights)
        # The architecture travels with the weights, so the folder still loads when the bundled
        # config of that name changes (or on a machine that never had it).
        (out / ARCH_CONFIG_DIR).mkdir(exist_ok=True)
        (out / ARCH_CONFIG_DIR / f"{arch_name}.json").write_text(json.dumps(arch_cfg, indent=2), encoding="utf-8")
        meta = {"format": FORMAT, "architecture": arch_name, "base_architecture": settings.model_name,
                "resolution": arch_cfg["vision_cfg"]["image_size"], "settings": asdict(settings),
                "vocabulary_fingerprint": vocabulary.fingerprint, "train_splits": list(TRAIN_SPLITS),
                "n_images": len(data.images), "data_fingerprint": data.fingerprint, "skipped": data.skipped,
                "epoch_losses": losses, "training_seconds": round(time.monotonic() - started, 1),
                "weights_file": WEIGHTS_FILE, "weights_digest": _file_digest(weights)}
        tmp = out / f"{CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(out / CONFIG_FILE)
        resolved = resolve_adapted_model(out)
    assert resolved is not None
    return TrainingResult(out, arch_name, resolved.model_key, len(data.images), losses, data.skipped)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` while a model's files are written (`fcntl.flock`, POSIX)."""
    import fcntl

    with open(folder / ".train-clip.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _model_dir(out_dir: str | Path) -> Path:
    """The output folder, created; a path that is a file or cannot be created is a one-line error."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the model.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the model folder {out} ({exc.strerror or exc}).") from None
    return out


def train_clip_from_source(source: str | Path, out_dir: str | Path, settings: TrainingSettings = TrainingSettings(),
                           vocabulary: Vocabulary | None = None, *, progress: bool = True,
                           tag_parses: Callable[[list], list[TagParse]] | None = None,
                           max_image_pixels: int | None = None, device: str = "cpu",
                           allow_download: bool | None = None, stage_batch_size: int = 256) -> TrainingResult:
    """`charattr train-clip SOURCE --out DIR`: read, parse tags (`tag_parses`: see `rows_from_source`),
    keep the training split, train."""
    from .schema import load_vocabulary

    settings.validate()
    source_dir, out = Path(source).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    if source_dir.is_dir() and (out == source_dir or source_dir in out.parents):
        raise ConfigError(f"--out {out_dir} is inside the source {source}; write the model outside the collection.")
    vocabulary = vocabulary or load_vocabulary()
    data = training_data(rows_from_source(source, vocabulary, max_image_pixels, tag_parses=tag_parses,
                                         batch_size=stage_batch_size), vocabulary,
                         max_images=settings.max_images)
    return train_clip(data, vocabulary, out_dir, settings, progress=progress, device=device,
                      allow_download=allow_download)


# --------------------------------------------------------------------------------------------
# reading it back


@dataclass(frozen=True)
class AdaptedModel:
    """A `train-clip` directory, resolved: what to build, what to load, what to call it."""

    model_name: str  # the architecture (registered with open_clip by `resolve_adapted_model`)
    checkpoint: Path
    model_key: str  # "<architecture>/adapted:<digest of settings, data, vocabulary and weights>"
    metadata: dict


def _file_digest(path: Path) -> str:
    """The weights' digest, as the model loader computes it for checkpoint files (remembered per
    path, size and mtime)."""
    from .clip_loading import _file_digest as checkpoint_digest

    return checkpoint_digest(path)


def _register_saved_architecture(arch: str, saved: Path) -> str:
    """Register the folder's own architecture with open_clip; the name to build it by.

    A registered config of the same name that differs (the bundled `charattr-small` changed since
    the model was trained) must not be used for these weights: the saved one is registered as
    `<name>-cfg<digest>` instead, so the model still loads and its key says it is another model."""
    import tempfile

    import open_clip

    from .clip_loading import register_model_configs

    register_model_configs()
    try:
        config = json.loads(saved.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{saved} is not a readable architecture config ({exc}); train the model again.") from None
    registered = open_clip.get_model_config(arch)
    if registered == config:
        return arch
    if registered is not None:
        arch = f"{arch}-cfg{xxhash.xxh3_64_hexdigest(json.dumps(config, sort_keys=True).encode())[:8]}"
        if open_clip.get_model_config(arch) == config:
            return arch
    with tempfile.TemporaryDirectory() as tmp:  # open_clip names a config after its file
        path = Path(tmp) / f"{arch}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        open_clip.add_model_config(path)
    return arch


def resolve_adapted_model(pretrained: str | Path | None) -> AdaptedModel | None:
    """If `pretrained` is a `train-clip` output directory, what it holds; None for anything else.

    Registers a derived architecture (another resolution) with open_clip so that the name can be
    built. Raises ConfigError for a directory whose JSON is damaged or whose weights are missing.
    """
    if pretrained is None:
        return None
    root = Path(str(pretrained)).expanduser()
    meta_path = root / CONFIG_FILE
    if not root.is_dir() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arch, weights_name = meta["architecture"], meta["weights_file"]
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{meta_path} is not a readable train-clip description ({exc}); train the model again.") from None
    weights = root / Path(weights_name).name
    if not weights.is_file():
        raise ConfigError(f"{root} names weights {weights.name}, which are missing; train the model again.")
    saved = root / ARCH_CONFIG_DIR / f"{arch}.json"
    if saved.is_file():
        arch = _register_saved_architecture(arch, saved)
    digest = xxhash.xxh3_128()
    for part in (arch, json.dumps(meta.get("settings"), sort_keys=True), meta.get("vocabulary_fingerprint", ""),
                 meta.get("data_fingerprint", ""), _file_digest(weights)):
        digest.update(str(part).encode())
        digest.update(b"\0")
    return AdaptedModel(model_name=arch, checkpoint=weights, model_key=f"{arch}/adapted:{digest.hexdigest()[:16]}",
                        metadata=meta)
