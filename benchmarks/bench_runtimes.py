"""CPU inference paths for the CLIP image tower: every runtime and precision against PyTorch eager fp32.

    .venv/bin/python -m benchmarks.bench_runtimes [--quick] [--model ViT-B-32] [--images 96] [--compile]

For each path (PyTorch eager fp32 / bf16 autocast / dynamic int8, `torch.compile` with --compile,
ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16, where installed) it measures, in the same process
and in interleaved rounds (medians reported; ratios taken within each round, so load elsewhere on
a shared machine hits every path alike):

- images/s of the image tower on a pre-made batch (random weights: the same FLOPs as trained ones),
  and the ratio to eager fp32;
- the cosine of its embeddings to eager fp32 on 64 images (mean / min): 1 means interchangeable.

Then the CLIP *stage* (files -> decode -> embeddings, decode overlapped with inference) with the
path `--precision auto` picks on this CPU, against the same stage in eager fp32: the number the
issue's goal is about (>= 2.2x where the CPU has native bf16, >= 1.15x elsewhere, never slower).
The CPU model and its flags are printed with the table. Writes benchmarks/results/runtimes.json.

On a CPU with AVX-512, `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`
gives a *partial* emulation of an AVX2-only CPU: PyTorch's kernels (ATen, oneDNN, MKL) and
OpenVINO's oneDNN kernels keep to AVX2, and the auto plan is the AVX2 one, but ONNX Runtime's MLAS kernels and some of
OpenVINO's own still use AVX-512. Paths that need native bf16 are skipped where the CPU (or the
cap) has none: they would run ~10x slower than fp32.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

from .common import DATA_DIR, Report, Target, header, machine_info, median, print_table, timed, write_demo_folder

CHECK_IMAGES = 64


def _paths(compile_too: bool) -> list[tuple[str, str, str]]:
    """(label, runtime, precision); "compile" is measured here only, not a runtime of the stage."""
    paths = [("torch eager fp32", "torch", "fp32"), ("torch eager bf16 (autocast)", "torch", "bf16"),
             ("torch dynamic int8 (Linear)", "torch", "int8")]
    if compile_too:
        paths += [("torch.compile fp32", "compile", "fp32"), ("torch.compile bf16", "compile", "bf16")]
    paths += [("onnxruntime fp32", "onnxruntime", "fp32"), ("onnxruntime int8 (QInt8)", "onnxruntime", "int8"),
              ("openvino fp32", "openvino", "fp32"), ("openvino bf16", "openvino", "bf16")]
    return paths


def _compiled_encoder(model, precision: str):
    import torch

    compiled = torch.compile(model.visual)

    def encode(x):
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(x).float()
        return compiled(x).float()
    return encode


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images, one round")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--images", type=int, help="images per measured path and round (default 96, quick 64)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling on 2 cores)")
    args = ap.parse_args(argv)
    images = args.images or (64 if args.quick else 96)
    rounds = args.rounds or (1 if args.quick else 5)

    import torch
    from PIL import Image

    from charattr_core import clip_runtime
    from charattr_core.clip import embed_images, load_clip
    from charattr_core.clip_runtime import InferencePath, check_images, cosine_to_reference, runtime_installed
    from charattr_core.cpu_features import ISA_LIMIT_ENV, read_cpu_features
    from charattr_core.records import ImageRecord
    from charattr_core.sources import open_source

    info = machine_info()
    features = read_cpu_features()
    info["cpu_features"] = features.describe()
    header(f"CLIP image tower on the CPU: {args.model}, random weights, batch {args.batch_size}", info)
    print(f"CPU: {features.describe()}\n")
    capped = os.environ.get(ISA_LIMIT_ENV)
    if capped:
        caps = ", ".join(f"{name}={os.environ.get(name)}" for name in
                         ("ATEN_CPU_CAPABILITY", ISA_LIMIT_ENV, "MKL_ENABLE_INSTRUCTIONS"))
        info["isa_cap"] = f"{caps}: partial emulation (ONNX Runtime's MLAS and some OpenVINO kernels ignore the cap)"
        print(info["isa_cap"] + "\n")
    reference = load_clip(args.model, None, device="cpu", precision="fp32", runtime="torch")
    base_key = reference.model_key
    check = [Image.fromarray(a) for a in check_images(reference.image_size, CHECK_IMAGES).numpy()]
    expected = reference.encode_pil(check)
    batch = torch.stack([reference.preprocess(im) for im in check[:args.batch_size]])

    models: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []
    for label, runtime, precision in _paths(args.compile):
        if runtime in ("onnxruntime", "openvino") and not runtime_installed(runtime):
            skipped.append({"path": label, "note": f"{runtime} not installed"})
            continue
        if precision == "bf16" and not features.native_bf16:
            skipped.append({"path": label, "note": "no native bf16 here (~10x slower than fp32)"})
            continue
        try:
            if runtime == "compile":
                encoder = _compiled_encoder(reference.model, precision)
                path = InferencePath("torch", precision)
            else:
                path = InferencePath(runtime, precision)
                encoder = None if path.is_reference else clip_runtime.build_image_encoder(
                    reference.model, path, reference.image_size, base_key)
            model = reference.with_image_encoder(encoder, path, base_key, label)
            model.encode_tensor(batch)  # warm-up: allocation, kernel choice, compilation
        except Exception as exc:  # noqa: BLE001 - a path this CPU (or its cap) cannot run is reported, not fatal
            skipped.append({"path": label, "note": f"failed: {str(exc).strip().splitlines()[-1][:120]}"})
            continue
        models[label] = model

    cosines = {label: cosine_to_reference(model.encode_pil(check), expected) for label, model in models.items()}
    runs: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        for label, model in models.items():
            def forward(model=model) -> int:
                done = 0
                while done < images:
                    model.encode_tensor(batch)
                    done += len(batch)
                return done
            runs[label].append(timed(forward).per_s)
    fp32 = "torch eager fp32"
    rows = []
    for label in models:
        ratio = median([a / b for a, b in zip(runs[label], runs[fp32])])
        mean, worst = cosines[label]
        rows.append({"path": label, "images_per_s": round(median(runs[label]), 2), "x_fp32": round(ratio, 2),
                     "cosine_mean": round(mean, 6), "cosine_min": round(worst, 6),
                     "all_rounds": [round(v, 2) for v in runs[label]]})
    print_table(rows + skipped, [("path", "path", ""), ("images_per_s", "images/s", ",.1f"),
                                 ("x_fp32", "x eager fp32", ".2f"), ("cosine_mean", "cosine mean", ".6f"),
                                 ("cosine_min", "cosine min", ".6f"), ("note", "note", "")])

    # The stage, files -> embeddings: the auto path against eager fp32.
    auto = load_clip(args.model, None, device="cpu")
    print(f"\n--precision auto on this CPU: {auto.inference_path} ({auto.inference_note})")
    folder = write_demo_folder(DATA_DIR / f"runtimes_{images}x256", images=images, shards=1, size=256)
    source = open_source(folder)
    uris = [item.uri for shard in source.shards() for item in source.read(shard)][:images]
    records = [ImageRecord(image_id=f"img{i:06d}", source_uri=uri, shard="bench") for i, uri in enumerate(uris)]

    def stage(model) -> int:
        return sum(1 for e in embed_images(records, model, lambda r: source.load_bytes(r.source_uri),
                                           batch_size=args.batch_size, num_workers=1) if e.embedding is not None)

    stage(auto)
    stage_runs: dict[str, list[float]] = {"fp32": [], "auto": []}
    for _ in range(rounds):
        stage_runs["fp32"].append(timed(lambda: stage(reference)).per_s)
        stage_runs["auto"].append(timed(lambda: stage(auto)).per_s)
    round_ratios = [a / b for a, b in zip(stage_runs["auto"], stage_runs["fp32"])]
    stage_ratio = median(round_ratios)
    spread = f"{min(round_ratios):.2f}-{max(round_ratios):.2f}"
    stage_rows = [{"path": "stage, eager fp32", "images_per_s": round(median(stage_runs["fp32"]), 2), "x_fp32": 1.0,
                   "all_rounds": [round(v, 2) for v in stage_runs["fp32"]]},
                  {"path": f"stage, auto ({auto.inference_path})", "images_per_s": round(median(stage_runs["auto"]), 2),
                   "x_fp32": round(stage_ratio, 2), "rounds_x_fp32": spread,
                   "all_rounds": [round(v, 2) for v in stage_runs["auto"]]}]
    print_table(stage_rows, [("path", "path", ""), ("images_per_s", "images/s", ",.1f"), ("x_fp32", "x fp32", ".2f"),
                             ("rounds_x_fp32", "rounds' x fp32", "")])

    goal = 2.2 if features.native_bf16 else 1.15
    report = Report("runtimes", args.quick, info,
                    extra={"model": f"{args.model}/random", "batch_size": args.batch_size, "rounds": rounds,
                           "auto_path": str(auto.inference_path), "auto_note": auto.inference_note,
                           "stage": stage_rows, "skipped": skipped})
    report.rows.extend(rows)
    report.targets.append(Target(f"CLIP stage, auto ({auto.inference_path}) / eager fp32", stage_ratio, goal,
                                 note=f"goal on this CPU ({'native bf16' if features.native_bf16 else 'no native bf16'})"))
    report.targets.append(Target("CLIP stage, auto / eager fp32, never slower", stage_ratio, 1.0))
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
