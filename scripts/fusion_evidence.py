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
import sys
import time
from pathlib import Path

import numpy as np

from charattr_core.calibration import ConfidenceCalibration
from charattr_core.clip_training import TrainingSettings, resolve_adapted_model, train_clip_from_source
from charattr_core.config import ALL_STRATEGIES
from charattr_core.evaluation import METRICS, OVERALL, answer_score, evaluate
from charattr_core.fusion import fuse_attribute
from charattr_core.learning import RANDOM_BASELINE, iter_examples, learn_and_evaluate
from charattr_core.pipeline import create_pipeline
from charattr_core.synthetic import load_ground_truth, write_demo_dataset


def oracle(holdout, vocabulary, thresholds) -> tuple[float, dict[str, float]]:
    """Accuracy of picking, per image and attribute, the fixed strategy that scores best in hindsight."""
    per: dict[str, list[float]] = {}
    for example in holdout:
        for key, label in example.labels.items():
            if key not in vocabulary.keys or not label:
                continue
            attribute = vocabulary.attribute(key)
            sources = example.attribute_sources(key)
            best = max(answer_score(fuse_attribute(attribute, sources, s, thresholds, example.context).values,
                                    tuple(label), attribute.multi) for s in ALL_STRATEGIES)
            per.setdefault(key, []).append(best)
    pooled = [x for v in per.values() for x in v]
    return float(np.mean(pooled)) if pooled else float("nan"), {k: float(np.mean(v)) for k, v in per.items()}


def run_seed(seed: int, args) -> str:
    work = Path(args.work) / f"seed{seed}"
    sample, model_dir = work / "demo", work / "adapted"
    started = time.monotonic()
    if not (sample / "ground_truth.jsonl").is_file():
        write_demo_dataset(sample, n_images=args.images, n_shards=4, seed=seed, size=args.size)
    if resolve_adapted_model(model_dir) is None:
        train_clip_from_source(sample, model_dir, TrainingSettings(epochs=args.epochs, seed=seed, batch_size=args.batch_size,
                                                                learning_rate=args.lr))
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
        from charattr_core.policy import RandomStrategyChooser
        raw = evaluate(holdout, pipe.vocabulary, policy=result.policy, thresholds=pipe.thresholds,
                       choosers={RANDOM_BASELINE: RandomStrategyChooser(seed=seed)}, n_bootstrap=args.bootstrap,
                       seed=seed)
        oracle_all, oracle_per = oracle(holdout, pipe.vocabulary, pipe.thresholds)
    report = result.report
    out_dir = Path(args.out).parent
    report.to_csv(out_dir / f"evaluation-seed{seed}.csv")
    if isinstance(result.calibration, ConfidenceCalibration):
        result.calibration.save(out_dir / f"calibration-seed{seed}.json")
    meta = adapted.metadata
    lines = [f"### Seed {seed}: {args.images} images, {report.n_images} held out", "",
             f"Adapted model `{adapted.model_key}`: trained on {meta['n_images']} probe_fit images, "
             f"{meta['settings']['epochs']} epochs, loss per epoch "
             f"{', '.join(f'{x:.3f}' for x in meta['epoch_losses'])}; sample + training took {trained_s:.0f} s.",
             "", "| method | " + " | ".join(METRICS) + " | ECE before calibration |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    for m in report.methods:
        lines.append(f"| {m} | " + " | ".join(report.metric(m, OVERALL, k).as_points() for k in METRICS)
                     + f" | {raw.metric(m, OVERALL, 'ece').as_points()} |")

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
              f"finds {100 * found:+.1f} of them.", "", "Accuracy per attribute (all methods):", "",
              "| method | " + " | ".join(report.attributes) + " |", "|---|" + "---|" * len(report.attributes)]
    for m in report.methods:
        lines.append(f"| {m} | " + " | ".join(report.metric(m, a).as_points() for a in report.attributes) + " |")
    lines.append(f"\n(total for this seed: {time.monotonic() - started:.0f} s)\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128, help="contrastive batch of train-clip")
    p.add_argument("--lr", type=float, help="peak learning rate of train-clip (default: its own)")
    p.add_argument("--size", type=int, default=128, help="drawn image side in pixels")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--work", default="/tmp/charattr-evidence")
    p.add_argument("--out", default="data/reports/evidence/evidence.md")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"## Evidence run: {args.images} images per seed, seeds {args.seeds}, {args.epochs} epochs, "
             f"batch {args.batch_size}, learning rate {args.lr or 'default'}, {args.bootstrap} bootstrap resamples\n"]
    for seed in args.seeds:
        parts.append(run_seed(seed, args))
        out.write_text("\n".join(parts), encoding="utf-8")  # keep what is done if a later seed is interrupted
        print(parts[-1], flush=True)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
