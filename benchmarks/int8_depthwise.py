"""int8 for a depthwise-heavy network: what the quantization literature recommends, tried on EfficientNet-Lite0.

    python benchmarks/int8_depthwise.py                # about 10 minutes on 2 cores
    python benchmarks/int8_depthwise.py --images 300   # a quicker accuracy check

torch.ao FX cannot trace timm's EfficientNet-Lite as it is: its 'same' padding branches on the input size.
``featx.models.quantize.traceable_copy`` makes a copy for the network's fixed input size (each ``Conv2dSame``
becomes a constant ``ZeroPad2d`` and a plain convolution; each ``BatchNormAct2d`` is folded into the
convolution before it). On that copy, with EfficientNet-Lite0's real ImageNet weights, this measures (the
last recipe is featx's):

1. recipes: torch.ao's x86 default (per-channel weights, histogram-calibrated per-tensor activations); the
   first and last convolutions kept in float; the depthwise convolutions kept in float; the output range
   of each convolution that feeds a ReLU6 clipped to [0, 6] (what TFLite does by fusing ReLU6 into the
   convolution), with histogram or min/max observers;
2. for each: min and mean cosine to fp32 on held-out real photos (mirrors of the calibration photos) and
   images/s of the bare network at batch 32, beside fp32 and bf16 with channels_last;
3. logistic-regression accuracy on the sample data with fp32 and with the best recipe's int8 features.

Rows go to benchmarks/results/int8_depthwise.csv with the CPU model.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from featx import FrozenNetwork, build_network
from featx._machine import cpu_model
from featx.inputs.manifests import load_manifest
from featx.models import tuning
from featx.models.network import _Pipeline
from featx.models.pooling import Pool
from featx.models.precision import TrialImages
from featx.models.preprocessing import Normalise
from featx.models.quantize import clip_relu6_ranges, depthwise_convolutions, traceable_copy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def quantized(
    module: nn.Module, calibration: torch.Tensor, keep_float: list[str], observer: str, clip_relu6: bool
) -> nn.Module:
    from torch.ao.quantization import QConfig, get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86").set_object_type(nn.AdaptiveAvgPool2d, None)
    if observer == "minmax":
        qconfig = QConfig(
            activation=MinMaxObserver.with_args(reduce_range=True), weight=get_default_qconfig("x86").weight
        )
        mapping.set_global(qconfig).set_object_type(nn.Conv2d, qconfig)
    for name in keep_float:
        mapping.set_module_name(name, None)
    prepared = prepare_fx(copy.deepcopy(module), mapping, example_inputs=(calibration[:1],))
    with torch.inference_mode():
        for chunk in calibration.split(8):
            prepared(chunk)
    if clip_relu6:
        clip_relu6_ranges(prepared)
    return convert_fx(prepared)


def pipeline_of(network: FrozenNetwork, module: nn.Module) -> nn.Module:
    """``module`` (a copy of the network, quantized or not) with the network's normalisation and pooling."""
    return _Pipeline(
        module, Normalise(network.preprocessing), Pool(network.pooling, network.backbone.prefix_tokens)
    )


def images_per_second(
    network: FrozenNetwork, module: nn.Module, batch: torch.Tensor, precision: str
) -> float:
    pipeline = pipeline_of(network, module)
    network.pipelines.run(pipeline, batch, precision)  # warm-up
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        network.pipelines.run(pipeline, batch, precision)
        best = max(best, len(batch) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", type=int, default=1500, help="sample images for the accuracy check (2/3 train)"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module=r"torch\.ao\..*")
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
    print(f"CPU: {cpu_model()}, torch {torch.__version__}", flush=True)
    network = build_network("efficientnet_lite0", precision="fp32", device="cpu")
    calibration_images, held_out = TrialImages(network.preprocessing, None).batches()
    calibration = network.pipelines.get("fp32").normalise(calibration_images)
    static = traceable_copy(network.pipelines.module, calibration[:1])
    reference = network.pipelines.run(pipeline_of(network, static), held_out, "fp32").numpy()
    timing = torch.cat([held_out, calibration_images] * 2)  # 32 real photos
    convs = [name for name, m in static.named_modules() if isinstance(m, nn.Conv2d)]
    depthwise = depthwise_convolutions(static)
    recipes = {
        "x86 default": ([], "histogram", False),
        "first and last conv in float": ([convs[0], convs[-1]], "histogram", False),
        "depthwise convs in float": (depthwise, "histogram", False),
        "ReLU6 ranges clipped to [0, 6]": ([], "histogram", True),
        "ReLU6 clipped, min/max observers": ([], "minmax", True),
        "ReLU6 clipped, depthwise convs in float": (depthwise, "histogram", True),
    }
    rows = []
    for precision in ("fp32", "bf16"):
        output = network.pipelines.forward(precision, held_out)
        cosines = [tuning.min_cosine(output[i : i + 1], reference[i : i + 1]) for i in range(len(output))]
        rows.append(
            {
                "recipe": f"featx's float network in {precision}",
                "cosine_min": min(cosines),
                "images_per_s": images_per_second(network, network.pipelines.module, timing, precision),
                "cosine_mean": float(np.mean(cosines)),
            }
        )
    best = None
    for name, (keep_float, observer, clip) in recipes.items():
        module = quantized(static, calibration, keep_float, observer, clip)
        output = network.pipelines.run(pipeline_of(network, module), held_out, "fp32").numpy()
        cosines = [tuning.min_cosine(output[i : i + 1], reference[i : i + 1]) for i in range(len(output))]
        rows.append(
            {
                "recipe": f"int8: {name}",
                "images_per_s": images_per_second(network, module, timing, "fp32"),
                "cosine_min": min(cosines),
                "cosine_mean": float(np.mean(cosines)),
            }
        )
        print(rows[-1], flush=True)
        if best is None or rows[-1]["cosine_min"] > best[1]:
            best = (module, rows[-1]["cosine_min"], name)

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    manifest = load_manifest(REPO / "data" / "fashion_mnist" / "manifest.csv").head(args.images)
    n_train = 2 * len(manifest) // 3
    decoded = torch.stack([network.preprocessing.decode(path) for path in manifest["path"]])
    for label, module in (("fp32", static), (f"int8: {best[2]}", best[0])):
        pipeline = pipeline_of(network, module)
        X = np.vstack([network.pipelines.run(pipeline, chunk, "fp32") for chunk in decoded.split(64)])
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        accuracy = model.fit(X[:n_train], manifest["label"][:n_train]).score(
            X[n_train:], manifest["label"][n_train:]
        )
        rows.append(
            {
                "recipe": f"accuracy, {label}",
                "accuracy": accuracy,
                "images": f"{n_train} train / {len(manifest) - n_train} test",
            }
        )
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows).assign(cpu=cpu_model(), torch=torch.__version__)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "int8_depthwise.csv"
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(frame.to_string(index=False, float_format="{:.4f}".format))


if __name__ == "__main__":
    main()
