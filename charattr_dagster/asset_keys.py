"""The asset names of DESIGN.md's graph (fixed: users and other tools refer to them)."""

RAW_IMAGES = "raw_images"
TAG_PARSES = "tag_parses"
CLIP_EMBEDDINGS = "clip_embeddings"
ATTRIBUTE_PROBES = "attribute_probes"
FUSION_POLICY = "fusion_policy"
FUSED_ATTRIBUTES = "fused_attributes"
ATTRIBUTE_REPORT = "attribute_report"

# The per-shard stages, in graph order.
PARTITIONED_ASSETS = (RAW_IMAGES, TAG_PARSES, CLIP_EMBEDDINGS, FUSED_ATTRIBUTES)
