"""The `charattr` command.

    charattr extract IMAGE [--tags "1girl blonde_hair"]   one image (tags: --tags, else its sidecar) -> JSON
    charattr batch PATH --out results.parquet|csv|jsonl    a folder / Parquet / tar source -> table
                        [--failures failed.csv]           (+ the images that failed, and why)
    charattr demo-data DIR                                 the bundled synthetic sample
    charattr eval PATH                                     learned fusion vs fixed strategies, held out
                  [--compare-precision int8]            (+ what another CPU inference path changes)
    charattr train-clip SOURCE --out DIR                   adapt CLIP to a collection from its tags
    charattr run SOURCE                                    the Dagster asset graph (charattr_dagster)

User mistakes (bad arguments, missing paths, a bad database URL, missing model weights) end
with one line on stderr and a non-zero exit code, never a traceback. The settings options of
each command are generated from `charattr_core.settings.Settings`, and default to the CHARATTR_*
environment variables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Sequence

from . import __version__
from .settings import PIPELINE, PRECISIONS, RUNTIMES, Settings, add_options
from .errors import CharattrError, ConfigError

EXIT_USAGE = 2
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(EXIT_USAGE)


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """The in-process pipeline's settings, generated from `charattr_core.settings.Settings`."""
    add_options(p, PIPELINE)


def config_from_args(args: argparse.Namespace) -> Settings:
    """The CHARATTR_* environment's settings; the options the user gave override them."""
    return Settings.from_options(args)


def _cmd_extract(args: argparse.Namespace) -> int:
    from .pipeline import create_pipeline
    if not Path(args.image).is_file():
        raise ConfigError(f"Image file {args.image} does not exist.")
    with create_pipeline(config_from_args(args)) as pipe:
        result = pipe.extract_from_image(args.image, tags=args.tags, require_signal=True)
        out = result.to_flat() if args.flat else result.to_dict(pipe.vocabulary)
        if not args.flat:
            out["evidence"] = {k: list(e.evidence) for k, e in result.attributes.items() if e.evidence}
            out["confidences"] = {k: round(e.confidence, 4) for k, e in result.attributes.items()}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .pipeline import RunSummary, create_pipeline
    from .outputs import check_outputs
    from .writers import FailureWriter, FusedResultWriter

    if not Path(args.path).exists():
        raise ConfigError(f"Source {args.path} does not exist.")
    config = config_from_args(args)
    # Before any work: an output that cannot be written, or would overwrite an input, stops here.
    check_outputs({"--out": args.out, "--failures": args.failures}, inputs=[args.path],
                  database_url=config.database_url if config.cache_results else None)
    summary = RunSummary(output=str(args.out))
    with contextlib.ExitStack() as stack:
        pipe = stack.enter_context(create_pipeline(config))
        writer = stack.enter_context(FusedResultWriter(args.out, pipe.vocabulary))
        failure_log = stack.enter_context(FailureWriter(args.failures)) if args.failures else None
        bar = tqdm(total=args.limit, unit="img", desc="charattr", disable=args.quiet or None, file=sys.stderr)
        rows: list[dict] = []
        failed: list[dict] = []
        for record, fused in pipe.iter_results(args.path, limit=args.limit, summary=summary):
            bar.update(1)
            if fused is not None:
                rows.append(fused.to_flat())
            elif failure_log is not None:
                failed.append(FailureWriter.row(record))
            if len(rows) >= 1024:
                writer.write(rows)
                rows = []
            if len(failed) >= 1024:
                failure_log.write(failed)
                failed = []
        writer.write(rows)
        if failure_log is not None:
            failure_log.write(failed)
            summary.notes.append(f"failed images and why: {args.failures}")
        bar.close()
        if pipe.clip_unavailable:
            summary.notes.append(f"CLIP not used: {pipe.clip_unavailable}")
    _print_summary(summary, writer.count)
    return 0


def _print_summary(summary, written: int) -> None:
    err = sys.stderr
    print(f"{summary.images} images, {summary.failed} failed, {written} rows written to {summary.output}", file=err)
    for stage, counts in summary.stages.items():
        print(f"  {stage}: {counts.computed} computed, {counts.skipped} from cache, {counts.failed} failed", file=err)
    for reason, n in sorted(summary.failure_reasons.items(), key=lambda kv: -kv[1]):
        print(f"  failed: {n} x {reason}", file=err)
    for signal_name, state in summary.signals.items():
        print(f"  {signal_name}: {state}", file=err)
    for note in summary.notes:
        print(f"  note: {note}", file=err)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from .synthetic import TagNoise, write_demo_dataset
    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder; choose a folder for the demo dataset.")
    if out.exists() and any(out.iterdir()) and not args.force:
        if (out / "ground_truth.jsonl").is_file():
            print(f"{out} already holds a demo dataset; use --force to write it again", file=sys.stderr)
            return 0
        raise ConfigError(f"Folder {out} is not empty; choose another folder or pass --force.")
    noise = TagNoise(missing=args.missing, wrong=args.wrong, alias=args.alias, extra=args.extra, no_tags=args.no_tags)
    info = write_demo_dataset(out, n_images=args.images, n_shards=args.shards, seed=args.seed, noise=noise,
                              size=args.size)
    print(f"wrote {info.n_images} images in {info.n_shards} shards to {out} (ground truth: {info.ground_truth_path})",
          file=sys.stderr)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .path_comparison import COMPARED_METHODS, compare_paths, learn_on_source, path_run, require_clip
    from .pipeline import RunSummary, create_pipeline
    from .policy_labels import load_labels

    source = Path(args.path)
    if not source.exists():
        raise ConfigError(f"Source {source} does not exist.")
    out_dir = Path(args.out_dir)
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap must be at least 1 (got {args.bootstrap}); 1000 is the default.")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out-dir {out_dir} is a file, not a folder; choose a folder for the report.")
    config = config_from_args(args)
    compared_config = None
    if args.compare_precision:
        if not config.use_clip:
            raise ConfigError("--compare-precision compares CLIP inference paths; it cannot be used with --no-clip.")
        compared_config = config.replace(precision=args.compare_precision, runtime=args.compare_runtime)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    keep = COMPARED_METHODS if compared_config is not None else ()
    with create_pipeline(config, use_rl=False) as pipe:
        vocab = pipe.vocabulary
        labels, label_kind = _reference_labels(args, source, vocab, load_labels)
        print(f"reference: {label_kind}", file=sys.stderr)
        if compared_config is not None:
            require_clip(pipe)
        # Signals are computed once and spilled to disk; every training pass streams them back.
        result = learn_on_source(pipe, source, labels=labels, limit=args.limit, n_bootstrap=args.bootstrap,
                                 seed=args.seed, spill_dir=out_dir, summary=summary, keep_items=keep)
        asked = path_run(pipe, result.report) if compared_config is not None else None
    comparison = None
    if compared_config is not None:  # the same images on the compared path, after the first model is let go
        with create_pipeline(compared_config, use_rl=False) as pipe:
            require_clip(pipe)
            print(f"compared path: embedding the same images again ({pipe.clip_model_key})", file=sys.stderr)
            compared_result = learn_on_source(pipe, source, labels=labels, limit=args.limit,
                                              n_bootstrap=args.bootstrap, seed=args.seed, spill_dir=out_dir,
                                              summary=RunSummary(), keep_items=keep)
            compared = path_run(pipe, compared_result.report)
        comparison = compare_paths(asked, compared)
        compared_dir = out_dir / f"compared-{compared.label.replace(' ', '-')}"
        compared_dir.mkdir(exist_ok=True)
        (compared_dir / "evaluation.md").write_text(compared_result.report.to_markdown(), encoding="utf-8")
        compared_result.report.to_csv(compared_dir / "evaluation.csv")
        if compared_result.probes is not None:
            compared_result.probes.save(compared_dir / "probes")
        comparison.to_csv(out_dir / "path_comparison.csv")
    report = result.report
    markdown = report.to_markdown() + (f"\n{comparison.to_markdown()}" if comparison is not None else "")
    (out_dir / "evaluation.md").write_text(markdown, encoding="utf-8")
    report.to_csv(out_dir / "evaluation.csv")
    report.reliability_plot(out_dir / "reliability.png")
    result.policy.save(out_dir / "policy")
    if result.probes is not None:
        result.probes.save(out_dir / "probes")
    if result.calibration is not None:
        result.calibration.save(out_dir / "calibration.json")
    print(markdown)
    claim = report.policy_claim()
    print(f"\n{claim}" if claim else "\nno held-out labels: nothing to compare", file=sys.stderr)
    print(_policy_ece_line(result), file=sys.stderr)
    print(f"publication gate: {'passed' if result.verdict.publish else 'refused'} ({result.verdict.reason})",
          file=sys.stderr)
    if result.probe_skip_reason:
        print(f"probes not trained: {result.probe_skip_reason}", file=sys.stderr)
    if comparison is not None:
        print("\n".join(comparison.summary_lines()), file=sys.stderr)
        print(f"path comparison in {out_dir / 'path_comparison.csv'}; the compared path's own report and probes "
              f"in {compared_dir}", file=sys.stderr)
    print(f"{summary.images} images ({summary.failed} failed); report, CSV, reliability plot, policy and probes "
          f"in {out_dir}", file=sys.stderr)
    return 0


TRAIN_CLIP_SETTINGS = ("data_dir", "database_url", "cache_results", "vocabulary", "device", "allow_download",
                       "stage_batch_size", "max_image_pixels")  # the pipeline settings train-clip takes


def _cmd_train_clip(args: argparse.Namespace) -> int:
    from .clip_training import TrainingSettings, train_clip_from_source
    from .pipeline import create_pipeline

    if not Path(args.source).exists():
        raise ConfigError(f"Source {args.source} does not exist.")
    config = config_from_args(args)
    settings = TrainingSettings(**{k: v for k, v in {
        "model_name": args.model, "pretrained": None if args.pretrained in (None, "random", "none") else args.pretrained,
        "epochs": args.epochs, "resolution": args.resolution, "batch_size": args.batch_size,
        "learning_rate": args.lr, "seed": args.seed, "max_images": args.max_images}.items() if v is not None})
    # Tags are parsed through the results cache (--database-url), as `charattr batch/run` parse them.
    with create_pipeline(config.model_copy(update={"use_clip": False})) as pipe:
        result = train_clip_from_source(args.source, args.out, settings, pipe.vocabulary, progress=not args.quiet,
                                        tag_parses=pipe.tag_parses, max_image_pixels=config.max_image_pixels,
                                        device=config.device, allow_download=config.allow_download,
                                        stage_batch_size=config.stage_batch_size)
    print(f"trained {result.model_name} on {result.n_images} training-split images "
          f"(final loss {result.epoch_losses[-1]:.4f}); model key {result.model_key}; use it with "
          f"--pretrained {result.out_dir}", file=sys.stderr)
    return 0


def _policy_ece_line(result) -> str:
    """The policy's held-out ECE, calibrated next to raw (the policy file carries the calibration)."""
    from .evaluation import RAW_ECE
    from .fusion import LEARNED_POLICY

    report = result.report
    if not report.n_images:
        return f"confidences: {result.policy.calibration_state()}"
    ece = report.metric(LEARNED_POLICY, metric="ece").as_points()
    if not report.calibrated:
        return f"learned_policy ECE on held-out images: {ece} (uncalibrated)"
    return (f"learned_policy ECE on held-out images: {ece} calibrated, "
            f"{report.metric(LEARNED_POLICY, metric=RAW_ECE).as_points()} raw; {result.policy.calibration_state()}")


def _reference_labels(args, source: Path, vocab, load_labels) -> tuple[dict, str]:
    """User labels win; a synthetic sample's ground truth next; else self-supervision only."""
    if args.labels:
        return load_labels(args.labels, vocab), f"labels file {args.labels} (+ self-supervised hidden tags)"
    truth_file = source / "ground_truth.jsonl"
    if source.is_dir() and truth_file.is_file():
        from .synthetic import load_ground_truth
        truth = {i: {k: tuple(v) for k, v in attrs.items() if v} for i, attrs in load_ground_truth(truth_file).items()}
        return truth, f"synthetic ground truth {truth_file}"
    return {}, "self-supervised: confident tags hidden from the sources (agreement with tags, not ground truth)"


def _count(text: str) -> int:
    """argparse type of --limit: a whole number >= 0 (a negative limit would silently do nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def _terminate(_signum, _frame) -> None:
    """SIGTERM (a service manager, `kill`) ends a run like Ctrl-C: outputs aborted, cache kept."""
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="charattr", description="Character attributes from anime/manga images: "
                     "Danbooru tags + CLIP + learned fusion.")
    parser.add_argument("--version", action="version", version=f"charattr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("extract", help="attributes of one image, as JSON")
    p.add_argument("image", help="an image file")
    p.add_argument("--tags", help='its tags, e.g. "1girl blonde_hair" or "long hair, red eyes" '
                   '(default: its sidecar file, IMAGE.txt or <stem>.txt, as `batch` reads it)')
    p.add_argument("--flat", action="store_true", help="the flat row (with per-attribute confidence) instead")
    _add_pipeline_options(p)
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("batch", help="attributes of every image under a folder, Parquet files or tar shards")
    p.add_argument("path", help="folder with sidecar .txt tags, Parquet file/folder, or WebDataset tars")
    p.add_argument("--out", required=True, help="results file: .parquet, .csv or .jsonl")
    p.add_argument("--failures", help="also list every image that failed and why: .csv, .jsonl or .parquet")
    p.add_argument("--limit", type=_count, help="stop after this many images")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_pipeline_options(p)
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("demo-data", help="write the synthetic sample: drawn characters with known attributes")
    p.add_argument("dir", help="output folder")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--missing", type=float, default=0.3, help="rate of attribute tags dropped")
    p.add_argument("--wrong", type=float, default=0.1, help="rate of attribute tags replaced by a wrong one")
    p.add_argument("--alias", type=float, default=0.1, help="rate of tags written as an alias")
    p.add_argument("--extra", type=float, default=0.2, help="rate of unrelated extra tags")
    p.add_argument("--no-tags", type=float, default=0.1, help="fraction of images without a sidecar")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser("eval", help="train probes + policy, score every source/strategy/policy on held-out images")
    p.add_argument("path", help="the source to evaluate on (a synthetic sample uses its ground truth)")
    p.add_argument("--labels", help="CSV/Parquet of image_id, attribute, value: corrections that serve as labels")
    p.add_argument("--out-dir", default="data/reports/eval", help="where the report, CSV and plot go")
    p.add_argument("--limit", type=_count, help="at most this many images")
    p.add_argument("--bootstrap", type=int, default=Settings.model_fields["eval_bootstrap"].default,
                   help="bootstrap resamples for the 95%% intervals (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-precision", choices=[x for x in PRECISIONS if x != "auto"],
                   help="also embed the images in this precision (e.g. int8) and report the paired difference "
                        "of zero-shot and probe accuracy against the path of --precision")
    p.add_argument("--compare-runtime", choices=RUNTIMES, default="auto",
                   help="runtime of the compared path (default auto: the fastest installed one for its precision)")
    _add_pipeline_options(p)
    p.set_defaults(func=_cmd_eval)

    from .clip_training import TrainingSettings
    recipe = TrainingSettings()  # the defaults live there; the help only shows them
    p = sub.add_parser("train-clip", help="adapt a CLIP model to a collection from its tags (training split only)")
    p.add_argument("source", help="folder with sidecar tags, Parquet file/folder, or WebDataset tars")
    p.add_argument("--out", required=True, help="output folder: adapted_clip.safetensors + adapted_clip.json")
    p.add_argument("--model", help=f"architecture (default {recipe.model_name}, trained from scratch)")
    p.add_argument("--pretrained", help="start from these weights (open_clip tag or checkpoint file)")
    p.add_argument("--epochs", type=int, help=f"passes over the training images (default {recipe.epochs})")
    p.add_argument("--resolution", type=int, help="image side the model sees (from scratch only)")
    p.add_argument("--batch-size", type=int, help=f"images per contrastive batch (default {recipe.batch_size})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {recipe.lr:g} from scratch, 1e-5 fine-tuning)")
    p.add_argument("--max-images", type=int, help="at most this many training images")
    p.add_argument("--seed", type=int, help=f"initialisation, caption and batch-order seed (default {recipe.seed})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-epoch loss")
    add_options(p, PIPELINE, only=TRAIN_CLIP_SETTINGS)  # --database-url, --vocabulary (its prompts write captions), ...
    p.set_defaults(func=_cmd_train_clip)

    # Other packages add commands (charattr_dagster adds `run`) without charattr_core importing them.
    for ep in entry_points(group="charattr.commands"):
        try:
            ep.load()(sub)
        except ImportError as exc:  # an optional layer that is not installed
            logging.getLogger("charattr").debug("command %s unavailable: %s", ep.name, exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Pillow warns about odd files (large images, corrupt EXIF) that validation already turns
        # into a failed row or accepts on purpose; its warnings would only scatter over the progress bar.
        warnings.filterwarnings("ignore", module=r"PIL\.")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except CharattrError as exc:
        sys.stderr.write(f"charattr: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("charattr: interrupted; results written so far are kept in the cache\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
