"""The Gradio blocks: Single image, Batch, Benchmark, About. Each handler returns what a person
reads; a `CharattrError` becomes its one sentence, anything else one line (the traceback goes to
the app's log, never to the page)."""

from __future__ import annotations

import functools
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool

import gradio as gr  # noqa: E402

from charattr_core.config import ALL_STRATEGIES  # noqa: E402
from charattr_core.errors import CharattrError  # noqa: E402

from . import about, batch, bench  # noqa: E402
from .service import RESULT_HEADERS, AppService, Controls, result_rows, summary_line  # noqa: E402

log = logging.getLogger("charattr.app")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, CharattrError):
        return f"**Error:** {exc}"
    log.exception("unexpected error in the app")
    return f"**Error:** unexpected {type(exc).__name__}: {exc} (the app's log has the details)."


def _raw_upload(component: gr.Image):
    """Hand charattr the uploaded file itself: the same bytes as on disk (so the same cache key as
    `charattr extract`), and a broken file reaches charattr's validation, which says what is wrong,
    instead of failing in Gradio's own decoding."""
    original = component.preprocess

    @functools.wraps(original)
    def preprocess(payload):
        if payload is not None and getattr(payload, "path", None) and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return original(payload)

    component.preprocess = preprocess
    return component


def _controls(strategy, policy, accept, low) -> Controls:
    return Controls(strategy, (policy or "").strip() or None, float(accept), float(low))


def build_app(service: AppService) -> gr.Blocks:
    cfg = service.config

    def single(image, server_path, tags, strategy, policy, accept, low):
        try:
            explained, seconds = service.explain(image, tags, _controls(strategy, policy, accept, low),
                                                 server_path=server_path,
                                                 name=os.path.basename(image) if image else None)
        except Exception as exc:  # noqa: BLE001 - the page shows one line, never a traceback
            return _error_text(exc), None, ""
        return explained.signals_line(), result_rows(explained), summary_line(explained, seconds)

    def prefill(server_path):
        if not (server_path or "").strip():
            return gr.update(), ""
        try:
            return service.sidecar_tags(server_path), ""
        except Exception as exc:  # noqa: BLE001
            return gr.update(), _error_text(exc)

    def run_batch(files, folder, limit, strategy, policy, accept, low, progress=gr.Progress()):
        try:
            result = batch.run_batch(service, _controls(strategy, policy, accept, low), files=files or (),
                                     folder=folder, limit=int(limit or 1000),
                                     progress=lambda done, total: progress((done, total), desc="images"))
        except Exception as exc:  # noqa: BLE001
            return _error_text(exc), None, None, None
        headers, rows = batch.table(result, service.pipeline().vocabulary.keys)
        failed = [[f["file"], f["error"]] for f in result.failures]
        return (result.message(), gr.update(value=rows, headers=headers),
                [str(result.csv_path), str(result.parquet_path)], failed or None)

    def run_bench(model, pretrained, images):
        pretrained = (pretrained or "").strip()
        try:
            config = cfg.replace(
                model_name=(model or cfg.model_name).strip(),
                pretrained=None if pretrained.lower() in ("", "none", "random") else pretrained)
            result = bench.run_benchmark(config, images=int(images))
        except Exception as exc:  # noqa: BLE001
            return _error_text(exc), None
        return result.markdown(), result.figure()

    def show_about():
        try:
            return about.about_markdown(service.pipeline())
        except Exception as exc:  # noqa: BLE001
            return _error_text(exc)

    # Gradio copies every served file (uploads, result downloads) into its own cache: hourly, drop
    # copies older than a day, so an app left running does not fill the disk.
    with gr.Blocks(title="charattr", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown("# charattr\nCharacter attributes from Danbooru tags, CLIP and a learned fusion policy — "
                    "the same pipeline and results cache as the `charattr` command.")
        with gr.Accordion("Fusion settings (used by every tab)", open=False):
            with gr.Row():
                strategy = gr.Dropdown(list(ALL_STRATEGIES), value=cfg.fusion_strategy, label="Fixed strategy",
                                       elem_id="strategy")
                policy = gr.Textbox(value=cfg.policy_path or "", label="Learned policy (base path; empty: the "
                                    "fixed strategy)", elem_id="policy")
                accept = gr.Slider(0, 1, value=cfg.confidence_threshold, step=0.05, label="Accept threshold",
                                   elem_id="accept")
                low = gr.Slider(0, 1, value=cfg.low_confidence_threshold, step=0.05, label="Fall-back threshold",
                                elem_id="low")
        controls = [strategy, policy, accept, low]

        with gr.Tab("Single image", elem_id="tab-single"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = _raw_upload(gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image",
                                                 elem_id="single-image", height=260))
                    server_path = gr.Textbox(label="…or a path on the server (its sidecar .txt fills the tags)",
                                             elem_id="single-path")
                    tags = gr.Textbox(label="Tags (optional)", placeholder="1girl, long hair, red eyes", lines=2,
                                      elem_id="single-tags")
                    go = gr.Button("Extract attributes", variant="primary", elem_id="single-run")
                with gr.Column(scale=3):
                    notice = gr.Markdown(elem_id="single-signals")
                    table = gr.Dataframe(headers=list(RESULT_HEADERS), interactive=False, wrap=True,
                                         max_height=2000, column_widths=["11%", "9%", "8%", "14%", "17%", "15%", "26%"],
                                         elem_id="single-result")
                    summary = gr.Markdown(elem_id="single-summary")
            go.click(single, [image, server_path, tags, *controls], [notice, table, summary])
            server_path.submit(prefill, [server_path], [tags, notice])
            server_path.blur(prefill, [server_path], [tags, notice])

        with gr.Tab("Batch", elem_id="tab-batch"):
            with gr.Row():
                with gr.Column(scale=1):
                    files = gr.File(file_count="multiple", label="Images, their sidecar .txt tags, or a .zip of both",
                                    elem_id="batch-files")
                    folder = gr.Textbox(label="…or a folder on the server", elem_id="batch-folder")
                    limit = gr.Number(value=1000, precision=0, minimum=1, label="At most this many images",
                                      elem_id="batch-limit")
                    run = gr.Button("Run batch", variant="primary", elem_id="batch-run")
                with gr.Column(scale=3):
                    status = gr.Markdown(elem_id="batch-status")
                    results = gr.Dataframe(interactive=False, label="Results", max_height=2000, elem_id="batch-table")
                    downloads = gr.File(label="Download (CSV, Parquet)", interactive=False, elem_id="batch-downloads")
                    failed = gr.Dataframe(headers=["file", "why it failed"], interactive=False,
                                          label="Failed files", elem_id="batch-failed")
            run.click(run_batch, [files, folder, limit, *controls], [status, results, downloads, failed])

        with gr.Tab("Benchmark", elem_id="tab-benchmark"):
            with gr.Row():
                model = gr.Textbox(value=cfg.model_name, label="open_clip model", elem_id="bench-model")
                weights = gr.Textbox(value=cfg.pretrained or "random", label="Weights (tag, file, or random)",
                                     elem_id="bench-pretrained")
                n_images = gr.Slider(4, 200, value=32, step=4, label="Generated images", elem_id="bench-images")
                bench_go = gr.Button("Run benchmark", variant="primary", elem_id="bench-run")
            bench_md = gr.Markdown(elem_id="bench-result")
            bench_plot = gr.Plot(label="Throughput", elem_id="bench-plot")
            bench_go.click(run_bench, [model, weights, n_images], [bench_md, bench_plot])

        with gr.Tab("About", elem_id="tab-about") as about_tab:
            about_md = gr.Markdown("Open this tab to read the asset graph and versions.", elem_id="about")
            about_tab.select(show_about, None, about_md)
    return app
