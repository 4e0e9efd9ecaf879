"""`adapted_clip`: CLIP adapted to the collection from its own tags (`charattr train-clip` as an asset).

Unpartitioned, beside `attribute_probes`: it reads every registered shard's `raw_images` and
`tag_parses` back from the warehouse (only the images of the training split, chosen by id before
their tag parse is decoded), loads those images' bytes from the source and calls the same core
function as the CLI (`clip_training.train_clip`). The model directory lands in the asset's
warehouse folder; point the pipeline at it with `CHARATTR_PRETRAINED=<that folder>` (the
directory's JSON names the architecture). It is not in `charattr run`'s jobs: training is an
explicit step (`dagster asset materialize --select adapted_clip`, or the `adapt_clip` job).
"""

import shutil
from typing import Optional

import dagster as dg
from dagster import AssetExecutionContext

from charattr_core.clip_training import TrainingSettings

from ..asset_keys import RAW_IMAGES, TAG_PARSES
from ..metadata import Stopwatch
from ..resources import PipelineSettings, SourceResource
from ..tables import iter_signals
from ..warehouse import Warehouse
from .learning import _save_atomically, _shards_with, _skipped

ADAPTED_CLIP = "adapted_clip"
ADAPTED_CLIP_CODE_VERSION = "adapted-clip-1"  # bump when the training recipe changes


_DEFAULTS = TrainingSettings()  # the one place the recipe's defaults live (clip_training.py)


class AdaptedClipConfig(dg.Config):
    """Run configuration of `adapted_clip` (the same settings and defaults as `charattr train-clip`)."""

    model_name: str = _DEFAULTS.model_name
    pretrained: Optional[str] = _DEFAULTS.pretrained
    epochs: int = _DEFAULTS.epochs
    resolution: Optional[int] = _DEFAULTS.resolution
    batch_size: int = _DEFAULTS.batch_size
    learning_rate: Optional[float] = _DEFAULTS.learning_rate
    seed: int = _DEFAULTS.seed
    max_images: Optional[int] = _DEFAULTS.max_images


def build_adapted_clip() -> dg.AssetsDefinition:
    @dg.asset(
        name=ADAPTED_CLIP, group_name="learning", deps=[RAW_IMAGES, TAG_PARSES],
        code_version=ADAPTED_CLIP_CODE_VERSION, kinds={"pytorch", "safetensors"},
        description="An open_clip model trained contrastively on (image, caption from its tags through the "
                    "vocabulary's prompts), on the probe_fit split only. Use it with CHARATTR_PRETRAINED=<folder>.",
    )
    def adapted_clip(context: AssetExecutionContext, config: AdaptedClipConfig, source: SourceResource,
                     warehouse: Warehouse, settings: PipelineSettings) -> dg.MaterializeResult:
        from charattr_core.clip_training import (ARCH_CONFIG_DIR, TrainingSettings, in_training_split,
                                                 train_clip, training_data)

        clock = Stopwatch()
        vocabulary = settings.load_vocabulary()
        src = source.open()
        shards = _shards_with(context, warehouse, RAW_IMAGES, TAG_PARSES)

        def rows():
            for shard in shards:
                for batch in iter_signals(warehouse, shard, with_embeddings=False, keep=in_training_split):
                    for s in batch:
                        try:
                            data = src.load_bytes(s.record.source_uri)
                        except OSError:  # moved or unreadable since ingest: counted as skipped
                            data = None
                        yield s.record.image_id, data, s.record.raw_tags, s.tag_parse

        data = training_data(rows(), vocabulary, max_images=config.max_images)
        if len(data.images) < 2:
            return _skipped(f"{len(data.images)} training-split image(s) with usable tags in {len(shards)} shard(s); "
                            "contrastive training needs at least 2")
        training = TrainingSettings(**config.model_dump())
        folder = warehouse.asset_dir(ADAPTED_CLIP)
        shutil.rmtree(folder / ARCH_CONFIG_DIR, ignore_errors=True)  # a folder cannot be replaced by a move
        _save_atomically(lambda tmp: train_clip(data, vocabulary, tmp, training, progress=False), folder)
        from charattr_core.clip_training import resolve_adapted_model

        adapted = resolve_adapted_model(folder)
        meta = adapted.metadata
        return dg.MaterializeResult(metadata={
            "model_key": adapted.model_key, "architecture": adapted.model_name, "path": dg.MetadataValue.path(str(folder)),
            "training_images": meta["n_images"], "shards": len(shards), "skipped": meta["skipped"],
            "epoch_losses": meta["epoch_losses"], "data_fingerprint": meta["data_fingerprint"],
            "use_with": f"CHARATTR_PRETRAINED={folder}", "seconds": clock.seconds})

    return adapted_clip
