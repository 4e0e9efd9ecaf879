"""`make evidence`: does the learned fusion policy beat fixed rules with an adapted visual signal?

Per seed: draw a synthetic sample (default tag noise), adapt `charattr-small` to it with
`train-clip` (probe_fit split only, captions from the tags), embed every image with the adapted
model, then train probes + policy and score everything on the held-out split against the drawn
ground truth (`learning.learn_and_evaluate`, confidences calibrated on `probe_calibration`).
Writes one markdown file with, per seed: the overall table (accuracy, macro-F1, coverage, ECE
calibrated and raw, 95 % bootstrap intervals), per-attribute accuracy, the policy against the
best fixed strategy, simple averaging and a random strategy (paired bootstrap), and the oracle
headroom; and `evaluation-seed<N>.csv` with every metric per attribute.

    python scripts/fusion_evidence.py --images 5000 --seeds 0 1 --epochs 8 --work /tmp/charattr-evidence
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from charattr_core.calibration import ConfidenceCalibration
from charattr_core.clip_training import TrainingSettings, resolve_adapted_model, train_clip_from_source
from charattr_core.config import ALL_STRATEGIES
from charattr_core.evaluation import METRICS, OVERALL, RAW_ECE, answer_score
from charattr_core.fusion import fuse_attribute
from charattr_core.learning import RANDOM_BASELINE, iter_examples, learn_and_evaluate
from charattr_core.pipeline import create_pipeline
from charattr_core.synthetic import load_ground_truth, write_demo_dataset


@dataclass
class ChoiceDiagnosis:
    """Per attribute: the oracle, and the policy's gains and losses against the best fixed strategy."""

    items: Counter = field(default_factory=Counter)  # labelled held-out items
    headroom: Counter = field(default_factory=Counter)  # items where some strategy beats the best fixed one
    gains: Counter = field(default_factory=Counter)  # ... and the policy's pick beats it too (summed score gain)
    losses: Counter = field(default_factory=Counter)  # items where the policy's pick scores below the best fixed
    oracle: Counter = field(default_factory=Counter)  # summed best score per item

    def rate(self, counter: Counter, attribute: str | None = None) -> float:
        keys = [attribute] if attribute else list(self.items)
        n = sum(self.items[k] for k in keys)
        return sum(counter[k] for k in keys) / n if n else float("nan")


def diagnose(holdout, vocabulary, thresholds, policy, best_fixed: dict[str, str]) -> ChoiceDiagnosis:
    """The oracle (best strategy per image and attribute in hindsight) and where the policy departs
    from the best fixed strategy: accuracy(policy) − accuracy(best fixed) = gains − losses."""
    d = ChoiceDiagnosis()
    for example in holdout:
        for key, label in example.labels.items():
            if key not in vocabulary.keys or not label:
                continue
            attribute = vocabulary.attribute(key)
            sources = example.attribute_sources(key)

            def score(strategy: str) -> float:
                answer = fuse_attribute(attribute, sources, strategy, thresholds, example.context)
                return answer_score(answer.values, tuple(label), attribute.multi)

            scores = {s: score(s) for s in ALL_STRATEGIES}
            pick = scores.get(policy.choose_for(attribute, sources, example.context))
            fixed = scores[best_fixed.get(key, best_fixed[OVERALL])]
            d.items[key] += 1
            d.oracle[key] += max(scores.values())
            d.headroom[key] += max(scores.values()) > fixed
            d.gains[key] += max(pick - fixed, 0.0)
            d.losses[key] += max(fixed - pick, 0.0)
    return d


def diagnosis_table(d: ChoiceDiagnosis, attributes) -> list[str]:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = ["| attribute | held-out items | items where another strategy beats the best fixed | "
             "policy gains there (points) | policy losses elsewhere (points) | net (points) |",
             "|---|---|---|---|---|---|"]
    for key in (OVERALL, *attributes):
        k = None if key == OVERALL else key
        n = sum(d.items.values()) if k is None else d.items[k]
        label = "all (each attribute against its own best fixed)" if k is None else key
        lines.append(f"| {label} | {n} | {pct(d.rate(d.headroom, k))} % | +{pct(d.rate(d.gains, k))} | "
                     f"−{pct(d.rate(d.losses, k))} | {100 * (d.rate(d.gains, k) - d.rate(d.losses, k)):+.1f} |")
    return lines


def training_settings(args, seed: int) -> TrainingSettings:
    """`train-clip`'s defaults, except what the command line gives."""
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr}
    return TrainingSettings(seed=seed, **{k: v for k, v in given.items() if v is not None})


def run_seed(seed: int, args) -> str:
    # A sample is reused only for the same seed, size and count, a model only for the same recipe:
    # an earlier run's files never stand in for what this run asks for.
    work = Path(args.work) / f"seed{seed}-{args.images}x{args.size}px"
    sample = work / "demo"
    settings = training_settings(args, seed)
    model_dir = work / f"adapted-{hashlib.blake2b(repr(settings).encode(), digest_size=6).hexdigest()}"
    started = time.monotonic()
    if not (sample / "ground_truth.jsonl").is_file():
        write_demo_dataset(sample, n_images=args.images, n_shards=4, seed=seed, size=args.size)
    reused = resolve_adapted_model(model_dir) is not None
    if not reused:
        train_clip_from_source(sample, model_dir, settings)
    adapted = resolve_adapted_model(model_dir)
    trained_s = time.monotonic() - started
    truth = {i: {k: tuple(v) for k, v in attrs.items() if v}
             for i, attrs in load_ground_truth(sample / "ground_truth.jsonl").items()}
    config = {"model_name": adapted.model_name, "pretrained": str(adapted.checkpoint),
              "database_url": f"sqlite:///{work / 'cache.db'}"}
    with create_pipeline(config, use_rl=False) as pipe:
        signals = list(pipe.iter_signals(sample))
        scorer = pipe._zero_shot()
        # a SignalSource: every pass streams the same in-memory batches (learning filters by split)
        result = learn_and_evaluate(lambda _keep: signals, pipe.vocabulary, model_key=pipe.clip.model_key,
                                    scorer=scorer, user_labels=truth, thresholds=pipe.thresholds,
                                    n_bootstrap=args.bootstrap, seed=seed)
        holdout = list(iter_examples(signals, "holdout", pipe.vocabulary, scorer, result.probes, truth,
                                     pipe.thresholds.accept))
        report = result.report
        best_fixed = {a: report.best_fixed(a) for a in (OVERALL, *report.attributes)}
        diagnosis = diagnose(holdout, pipe.vocabulary, pipe.thresholds, result.policy, best_fixed)
    oracle_all = diagnosis.rate(diagnosis.oracle)
    oracle_per = {k: diagnosis.rate(diagnosis.oracle, k) for k in diagnosis.items}
    out_dir = Path(args.out).parent
    report.to_csv(out_dir / f"evaluation-seed{seed}.csv")
    if isinstance(result.calibration, ConfidenceCalibration):
        result.calibration.save(out_dir / f"calibration-seed{seed}.json")
    meta = adapted.metadata
    lines = [f"### Seed {seed}: {args.images} images, {report.n_images} held out", "",
             f"Adapted model `{adapted.model_key}`: trained on {meta['n_images']} probe_fit images, "
             f"{meta['settings']['epochs']} epochs, loss per epoch "
             f"{', '.join(f'{x:.3f}' for x in meta['epoch_losses'])}; "
             + (f"model reused from an earlier run of this command (its training took "
                f"{meta.get('training_seconds', '?')} s)." if reused else f"sample + training took {trained_s:.0f} s."),
             "", "| method | " + " | ".join(METRICS) + " | ECE before calibration |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    for m in report.methods:
        lines.append(f"| {m} | " + " | ".join(report.metric(m, OVERALL, k).as_points() for k in METRICS)
                     + f" | {report.metric(m, OVERALL, RAW_ECE).as_points()} |")

    def diff(other, attribute):
        c = report.compare("learned_policy", other, attribute)
        return f"{100 * c.margin:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"

    lines += ["", "| attribute | learned_policy | best fixed | policy − best fixed | policy − simple_average | "
              "policy − random_strategy | oracle |", "|---|---|---|---|---|---|---|"]
    for attribute in (OVERALL, *report.attributes):
        best = report.best_fixed(attribute)
        ora = oracle_all if attribute == OVERALL else oracle_per.get(attribute, float("nan"))
        lines.append(f"| {attribute} | {report.metric('learned_policy', attribute).as_points()} | {best} "
                     f"{report.metric(best, attribute).as_points()} | {diff(best, attribute)} | "
                     f"{diff('simple_average', attribute)} | {diff(RANDOM_BASELINE, attribute)} | {100 * ora:.1f} |")
    best = report.best_fixed(OVERALL)
    headroom = oracle_all - report.metric(best, OVERALL).value
    found = report.metric("learned_policy", OVERALL).value - report.metric(best, OVERALL).value
    lines += ["", f"Oracle headroom over the best fixed strategy ({best}): {100 * headroom:+.1f} points; the policy "
              f"finds {100 * found:+.1f} of them.", "",
              "Why the policy gains what it gains: the items where some strategy beats the best fixed one "
              "(the oracle's headroom), what the policy's picks win there and lose elsewhere, per attribute "
              "(policy − best fixed = gains − losses):", "", *diagnosis_table(diagnosis, report.attributes)]
    for metric in (*METRICS, RAW_ECE):
        what = "ECE before calibration" if metric == RAW_ECE else metric
        lines += ["", f"{what} per attribute (all methods):", "",
                  "| method | " + " | ".join(report.attributes) + " |", "|---|" + "---|" * len(report.attributes)]
        for m in report.methods:
            lines.append(f"| {m} | " + " | ".join(report.metric(m, a, metric).as_points() for a in report.attributes)
                         + " |")
    lines.append(f"\n(total for this seed: {time.monotonic() - started:.0f} s)\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, help="train-clip epochs (default: its own)")
    p.add_argument("--batch-size", type=int, help="contrastive batch of train-clip (default: its own)")
    p.add_argument("--lr", type=float, help="peak learning rate of train-clip (default: its own)")
    p.add_argument("--size", type=int, default=128, help="drawn image side in pixels")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--work", default="/tmp/charattr-evidence")
    p.add_argument("--out", default="data/reports/evidence/evidence.md")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe = training_settings(args, 0)
    parts = [f"## Evidence run: {args.images} images per seed, seeds {args.seeds}, {recipe.model_name} from scratch, "
             f"{recipe.epochs} epochs, batch {recipe.batch_size}, peak learning rate {recipe.lr:g}, "
             f"{args.bootstrap} bootstrap resamples\n"]
    started = time.monotonic()
    for seed in args.seeds:
        parts.append(run_seed(seed, args))
        out.write_text("\n".join(parts), encoding="utf-8")  # keep what is done if a later seed is interrupted
        print(parts[-1], flush=True)
    from charattr_core.cpu_features import read_cpu_features

    parts.append(f"Whole run: {time.monotonic() - started:.0f} s on {os.cpu_count()} CPU cores, "
                 f"{read_cpu_features().describe()}.\n")
    out.write_text("\n".join(parts), encoding="utf-8")
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
