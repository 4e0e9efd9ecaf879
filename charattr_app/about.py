"""The About tab: the asset graph (read from charattr_dagster's definitions, imported only when the
tab is opened), the versions the app's answers carry, and the commands that run the same at scale."""

from __future__ import annotations


from charattr_core import __version__
from charattr_core.pipeline import Pipeline

GRAPH_FALLBACK = """```
raw_images [shard] ─┬─> tag_parses [shard] ──────┬─> attribute_probes ─> fusion_policy ─┐
                    └─> clip_embeddings [shard] ─┘                                      v
      (tag_parses, clip_embeddings, probes, policy) ─> fused_attributes [shard] ─> attribute_report
```"""


def asset_graph_markdown(pipe: Pipeline) -> str:
    """The assets, what each reads, whether it is partitioned by shard, and its code version."""
    try:
        from charattr_dagster.definitions import build_definitions
        from charattr_dagster.settings import Settings
    except ImportError as exc:  # the Dagster layer is not installed beside the app
        return f"{GRAPH_FALLBACK}\n\n(charattr_dagster is not importable here: {exc})"
    c = pipe.config
    settings = Settings.from_env().replace(model_name=c.model_name, pretrained=c.pretrained,
                                            use_clip=c.use_clip, fusion_strategy=c.fusion_strategy)
    graph = build_definitions(settings).resolve_asset_graph()
    nodes = {n.key.to_user_string(): n for n in graph.asset_nodes}
    order = [k for k in ("raw_images", "tag_parses", "clip_embeddings", "attribute_probes", "fusion_policy",
                         "fused_attributes", "attribute_report") if k in nodes]
    order += sorted(set(nodes) - set(order))
    lines = ["| asset | reads | partitioned by shard | code version |", "|---|---|---|---|"]
    for key in order:
        node = nodes[key]
        parents = ", ".join(sorted(p.to_user_string() for p in node.parent_keys)) or "source files"
        lines.append(f"| `{key}` | {parents} | {'yes' if node.is_partitioned else 'no'} | `{node.code_version}` |")
    return "\n".join(lines)


def versions_markdown(pipe: Pipeline) -> str:
    versions = pipe.versions()
    c = pipe.config
    rows = [("charattr", __version__),
            ("CLIP model", pipe.clip_model_key or (f"none: {pipe.clip_unavailable}" if pipe.clip_unavailable
                                                   else f"{c.model_name}/{c.pretrained or 'random'} (not loaded yet)")),
            ("vocabulary", f"{c.vocabulary or 'bundled attributes.toml'} (fingerprint {pipe.vocabulary.fingerprint})"),
            ("fusion", f"learned policy {pipe.policy.version}" if pipe.policy is not None
             else f"fixed strategy {c.fusion_strategy}"),
            ("attribute probes", versions.get("attribute_probes", "none")),
            ("thresholds (accept / fall back)", versions["thresholds"]),
            ("results cache", pipe.store.url if pipe.store is not None else "off"),
            ("fused-row cache key", pipe.fused_version())]
    return "\n".join(["| what | version in use |", "|---|---|", *(f"| {k} | `{v}` |" for k, v in rows)])


def commands_markdown(pipe: Pipeline) -> str:
    c = pipe.config
    model = "--no-clip" if not c.use_clip else f"--model {c.model_name} --pretrained {c.pretrained or 'random'}"
    return f"""```bash
charattr batch /path/to/images --out results.parquet --failures failed.csv {model}   # in-process, same cache
charattr run /path/to/images {model}        # the Dagster asset graph: partitions, lineage, checks
make ui                                     # the Dagster UI on http://127.0.0.1:3000 (runs, lineage, backfills)
charattr eval /path/to/images {model}       # learned fusion vs fixed strategies on held-out images
```"""


def about_markdown(pipe: Pipeline) -> str:
    return "\n\n".join([
        "### The asset graph", asset_graph_markdown(pipe),
        "### Versions behind this app's answers", versions_markdown(pipe),
        "### The same at scale", commands_markdown(pipe),
    ])
