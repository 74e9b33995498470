"""featx against what a user would write instead: same images, same weights, same machine, one run.

    python benchmarks/speed.py                                  # resnet18, resnet50, vgg16; 1,024 images each
    python benchmarks/speed.py --backbones resnet18 --images 128 --skip-peers

Variants, each timed in its own process (so thread pools, caches and peak RSS do not leak between them),
from image files to pooled vectors, after a warm-up on other images:

- ``per_image``: the tutorial loop: PIL open, the weights' transforms, ``model(x[None])``, fp32, no_grad;
- ``dataloader``: a competent hand-written loop: Dataset + DataLoader (batch 64, 2 workers), eval, no_grad, fp32;
- ``img2vec``, ``embetter``: the PyPI peers (img2vec-pytorch, embetter's TimmEncoder), fed the same weights;
- ``featx_cold`` / ``featx_warm``: featx's engine with its defaults on a fresh cache, then again on the warm
  cache; ``featx_compiled_*`` the same with ``compile=True`` (compiling happens in the warm-up, timed apart);
- ``bare_*``: the network alone on preloaded tensors, batch 64, per precision and memory layout: the ceiling.

``--photos N`` adds a photo set for the first backbone: N phone-sized (12 MP, 4032x3024) and N 1080p JPEGs
made from scikit-learn's real sample photographs (random crops, flips), with ``featx_fulldecode`` (featx
with ``decoding="full"``, as before reduced decoding) beside featx's defaults. ``--busy`` runs the
per-image loop and featx once more with a CPU-bound process beside them (a busy neighbour).

The images are real files: half Fashion-MNIST PNGs from the sample data, half JPEG photos (crops of
scikit-learn's two sample photographs, 400x300). Weights are one random-init state dict per backbone (no
ImageNet ResNet/VGG weights reach this machine offline); speed does not depend on the values. Fidelity of
featx's default precision uses EfficientNet-Lite0's real weights on the sample data. Prints a table with
ratios to featx, writes benchmarks/results/speed.csv (and fidelity.csv, memory.csv).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.models as tvm
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PEERS = ("img2vec", "embetter")
PEER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")  # what both peers share
WARMUP = 64  # one full batch: every variant has met the batch shape before the clock starts
BATCH = 64


# --- the image set ----------------------------------------------------------------------------------------


def write_images(folder: Path, n: int, seed: int) -> list[str]:
    """n image files, half sample PNGs and half JPEG photo crops, all distinct."""
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    manifest = pd.read_csv(REPO / "data" / "fashion_mnist" / "manifest.csv")
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in load_sample_images().images]
    # distinct sources: no content repeats, so no variant gets an image for free
    sample_rows = rng.permutation(len(manifest))
    crop_positions = rng.permutation((640 - 400) * (427 - 300))
    paths = []
    for i in range(n):
        if i % 2:
            photo = photos[i % len(photos)]
            left, top = divmod(int(crop_positions[i // 2]), photo.height - 300)  # distinct crops
            path = folder / f"{i:06d}.jpg"
            photo.crop((left, top, left + 400, top + 300)).save(path, quality=90)
        else:
            path = folder / f"{i:06d}.png"
            row = manifest.iloc[int(sample_rows[(i // 2) % len(manifest)])]
            pixels = np.asarray(Image.open(REPO / "data" / "fashion_mnist" / row["path"]))
            Image.fromarray(
                np.clip(pixels.astype(int) + int(rng.integers(-3, 4)), 0, 255).astype(np.uint8)
            ).save(path)
        paths.append(str(path))
    return paths


# --- the variants (each runs in a child process) ------------------------------------------------------------


def tutorial_model(backbone: str, weights_file: str) -> torch.nn.Module:
    """The network a tutorial builds: torchvision's, weights loaded, classifier replaced by Identity."""
    model = tvm.get_model(backbone, weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    if backbone.startswith("vgg"):
        model.classifier = torch.nn.Identity()  # features -> 7x7 avgpool (a no-op at 224) -> flatten: 25088
    else:
        model.fc = torch.nn.Identity()
    return model.eval()


def tutorial_transform(backbone: str):
    return tvm.get_model_weights(backbone).DEFAULT.transforms()


def per_image(backbone: str, weights_file: str, paths: list[str], warmup: list[str]) -> Callable[[], int]:
    model, transform = tutorial_model(backbone, weights_file), tutorial_transform(backbone)

    def run(files: list[str]) -> int:
        with torch.no_grad():
            for path in files:
                model(transform(Image.open(path).convert("RGB"))[None])
        return len(files)

    run(warmup)
    return lambda: run(paths)


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def dataloader(backbone: str, weights_file: str, paths: list[str], warmup: list[str]) -> Callable[[], int]:
    model, transform = tutorial_model(backbone, weights_file), tutorial_transform(backbone)

    def run(files: list[str]) -> int:
        loader = torch.utils.data.DataLoader(_Files(files, transform), batch_size=BATCH, num_workers=2)
        with torch.no_grad():
            for batch in loader:
                model(batch)
        return len(files)

    run(warmup)
    return lambda: run(paths)


def img2vec(backbone: str, weights_file: str, paths: list[str], warmup: list[str]) -> Callable[[], int]:
    # img2vec loads torchvision's DEFAULT weights through torch.hub: put ours where it looks.
    url = tvm.get_model_weights(backbone).DEFAULT.url
    checkpoints = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / url.rsplit("/", 1)[1]).write_bytes(Path(weights_file).read_bytes())
    from img2vec_pytorch import Img2Vec

    encoder = Img2Vec(cuda=False, model=backbone)

    def run(files: list[str]) -> int:
        for start in range(0, len(files), BATCH):
            encoder.get_vec([Image.open(p).convert("RGB") for p in files[start : start + BATCH]])
        return len(files)

    run(warmup)
    return lambda: run(paths)


def embetter(backbone: str, weights_file: str, paths: list[str], warmup: list[str]) -> Callable[[], int]:
    # TimmEncoder asks timm for pretrained weights (a download): hand it the same state dict instead.
    import timm
    from embetter.vision import ImageLoader, TimmEncoder

    state = {k: v for k, v in torch.load(weights_file, weights_only=True).items() if not k.startswith("fc.")}
    create = timm.create_model

    def with_our_weights(name, pretrained=False, **kwargs):
        model = create(name, pretrained=False, **kwargs)
        model.load_state_dict(state)
        return model

    timm.create_model = with_our_weights
    loader, encoder = ImageLoader(convert="RGB"), TimmEncoder(backbone)

    def run(files: list[str]) -> int:
        for start in range(0, len(files), BATCH):
            encoder.transform(loader.transform(files[start : start + BATCH]))
        return len(files)

    run(warmup)
    return lambda: run(paths)


def featx_engine(
    backbone: str,
    weights_file: str,
    paths: list[str],
    warmup: list[str],
    *,
    cache_dir: str,
    precision: str,
    compile: bool | str,
    decoding: str = "reduced",
) -> tuple[Callable[[], int], float]:
    """featx's engine as every door runs it; the warm-up (and compiling, if asked) is timed apart."""
    from featx import FeatureCache, build_network
    from featx.engines import RunOptions
    from featx.extract import extract

    network = build_network(
        backbone, weights=weights_file, precision=precision, compile=compile, decoding=decoding
    )
    namespace = FeatureCache(cache_dir).namespace(network.fingerprint)
    start = time.perf_counter()
    extract(warmup, network, namespace, RunOptions(batch_size=BATCH))
    warmup_s = time.perf_counter() - start

    def run() -> int:
        result = extract(paths, network, namespace, RunOptions(batch_size=BATCH))
        np.save(Path(cache_dir) / "vectors.npy", result.features)
        return len(paths)

    return run, warmup_s


def bare(backbone: str, weights_file: str, precision: str, layout: str) -> Callable[[], int]:
    """The truncated network alone on a preloaded, preprocessed batch: no decoding, hashing or cache.

    ``layout``: 'contiguous', 'cl' (channels_last) or 'compiled' (channels_last + torch.compile)."""
    from featx import build_network

    network = build_network(backbone, weights=weights_file, precision=precision, compile=False)
    memory_format = torch.contiguous_format if layout == "contiguous" else torch.channels_last
    module = network.pipelines.module.to(memory_format=memory_format)
    if layout == "compiled":
        module = torch.compile(module, dynamic=False, options={"freezing": True})
    dtype = {"bf16": torch.bfloat16}.get(precision)
    crop = network.preprocessing.crop
    batch = torch.randn(BATCH, 3, crop, crop).contiguous(memory_format=memory_format)

    def forward() -> None:
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            module(batch)["features"].float()

    forward()
    repeats = 3

    def run() -> int:
        for _ in range(repeats):
            forward()
        return repeats * BATCH

    return run


def child(args: argparse.Namespace) -> None:
    """Run one variant, print one JSON line: images/s and peak RSS (this process and its workers)."""
    paths, warmup = json.loads(Path(args.paths).read_text()), json.loads(Path(args.warmup).read_text())
    results, warmup_s = [], None
    if args.variant.startswith("featx"):
        compile = args.variant == "featx_compiled" or "auto"
        run, warmup_s = featx_engine(
            args.backbone,
            args.weights,
            paths,
            warmup,
            cache_dir=args.cache,
            precision=args.precision,
            compile=compile,
            decoding="full" if args.variant == "featx_fulldecode" else "reduced",
        )
        prefix = args.variant + ("" if args.precision == "auto" else f"_{args.precision}")
        for name in (prefix + "_cold", prefix + "_warm"):
            results.append((name, *_timed(run)))
    elif args.variant.startswith("bare_"):
        _, precision, layout = args.variant.split("_")
        results.append((args.variant, *_timed(bare(args.backbone, args.weights, precision, layout))))
    else:
        build = {"per_image": per_image, "dataloader": dataloader, "img2vec": img2vec, "embetter": embetter}
        results.append(
            (args.variant, *_timed(build[args.variant](args.backbone, args.weights, paths, warmup)))
        )
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    for name, images, seconds in results:
        print(
            json.dumps(
                {
                    "variant": name,
                    "images": images,
                    "seconds": seconds,
                    "images_per_s": images / seconds,
                    "peak_rss_mb": rss_self,
                    "worker_peak_rss_mb": rss_children,
                    "warmup_s": warmup_s,
                }
            )
        )


def _timed(run: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    images = run()
    return images, time.perf_counter() - start


# --- the parent: orchestrate, compare, print ---------------------------------------------------------------


def spawn(
    variant: str,
    backbone: str,
    weights: str,
    paths: Path,
    warmup: Path,
    work: Path,
    precision: str = "auto",
    label: str | None = None,
    busy: bool = False,
) -> list[dict]:
    """Run one variant in its own process (beside a CPU-bound neighbour if ``busy``); rows under ``label``."""
    label = label or backbone
    cache = work / f"cache-{label}-{variant}-{precision}{'-busy' if busy else ''}".replace(" ", "_")
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--backbone",
        backbone,
        "--weights",
        weights,
        "--paths",
        str(paths),
        "--warmup",
        str(warmup),
        "--cache",
        str(cache),
        "--precision",
        precision,
    ]
    env = {**os.environ, "TORCH_HOME": str(work / "torch_home")}
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    if done.returncode:
        print(f"  {variant} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return []
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        row["variant"] += "_busy" if busy else ""
        print(
            f"  {label:>9} {row['variant']:>14}: {row['images_per_s']:8.1f} images/s, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB (+ workers {row['worker_peak_rss_mb']:.0f} MB)",
            file=sys.stderr,
        )
    return [{"backbone": label, **row} for row in rows]


def write_photos(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[str]:
    """``n`` distinct JPEG photos at ``size``: random crops and flips of scikit-learn's two real photographs."""
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in load_sample_images().images]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        width, height = int(photo.width * rng.uniform(0.6, 1)), int(photo.height * rng.uniform(0.6, 1))
        left, top = (
            int(rng.integers(0, photo.width - width + 1)),
            int(rng.integers(0, photo.height - height + 1)),
        )
        picture = photo.crop((left, top, left + width, top + height)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
        paths.append(str(folder / f"{i:04d}.jpg"))
        picture.save(paths[-1], "JPEG", quality=90)
    return paths


def benchmark_photos(backbone: str, n: int, work: Path) -> list[dict]:
    """The per-image loop, the DataLoader loop, featx as before (full decoding) and featx, on big JPEGs."""
    weights = str(work / f"{backbone}.pth")
    warmup = work / "warmup-photos.json"
    warmup.write_text(json.dumps(write_photos(work / "photos-warmup", 8, (1920, 1080), seed=3)))
    rows = []
    for name, size in (("12MP", (4032, 3024)), ("1080p", (1920, 1080))):
        paths = work / f"photos-{name}.json"
        paths.write_text(json.dumps(write_photos(work / f"photos-{name}", n, size, seed=4)))
        for variant in ("per_image", "dataloader", "featx_fulldecode", "featx"):
            rows += spawn(variant, backbone, weights, paths, warmup, work, label=f"{backbone} {name}")
    return rows


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def benchmark_backbone(backbone: str, n: int, work: Path, peers: bool) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    weights = work / f"{backbone}.pth"
    torch.save(tvm.get_model(backbone, weights=None).state_dict(), weights)
    paths = work / f"paths-{backbone}.json"
    paths.write_text(json.dumps(write_images(work / f"images-{backbone}", n, seed=1)))
    warmup = work / f"warmup-{backbone}.json"
    warmup.write_text(json.dumps(write_images(work / f"warmup-{backbone}", WARMUP, seed=2)))

    rows = []
    variants = ["per_image", "dataloader"]
    if peers and backbone in PEER_BACKBONES:
        variants += list(PEERS)
    variants += [
        "featx",
        "featx_compiled",
        "bare_fp32_contiguous",
        "bare_fp32_cl",
        "bare_bf16_contiguous",
        "bare_bf16_cl",
        "bare_bf16_compiled",
    ]
    for variant in variants:
        rows += spawn(variant, backbone, str(weights), paths, warmup, work)
    rows += spawn("featx", backbone, str(weights), paths, warmup, work, precision="fp32")
    rows += spawn("featx", backbone, str(weights), paths, warmup, work, precision="int8")
    fp32 = np.load(work / f"cache-{backbone}-featx-fp32" / "vectors.npy")
    default = cosine(np.load(work / f"cache-{backbone}-featx-auto" / "vectors.npy"), fp32)
    int8 = cosine(np.load(work / f"cache-{backbone}-featx-int8" / "vectors.npy"), fp32)
    return rows, {
        "backbone": backbone,
        "weights": "random init",
        "cosine_min": default.min(),
        "cosine_mean": default.mean(),
        "int8_cosine_min": int8.min(),
        "int8_cosine_mean": int8.mean(),
    }


def real_fidelity(n_train: int, n_test: int) -> dict:
    """featx's default precision against fp32 with real ImageNet weights: cosine and accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from featx import extract_features
    from featx.inputs.manifests import load_manifest

    manifest = load_manifest(REPO / "data" / "fashion_mnist" / "manifest.csv")
    train = manifest[manifest["split"] == "train"].head(n_train)
    test = manifest[manifest["split"] == "test"].head(n_test)
    accuracy, vectors = {}, {}
    for precision in ("auto", "fp32"):
        X_train = extract_features(train["path"].tolist(), "efficientnet_lite0", precision=precision)
        X_test = extract_features(test["path"].tolist(), "efficientnet_lite0", precision=precision)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        accuracy[precision] = model.fit(X_train, train["label"]).score(X_test, test["label"])
        vectors[precision] = np.vstack([X_train, X_test])
    similarity = cosine(vectors["auto"], vectors["fp32"])
    return {
        "backbone": "efficientnet_lite0",
        "weights": "ImageNet (pip)",
        "cosine_min": similarity.min(),
        "cosine_mean": similarity.mean(),
        "accuracy_default": accuracy["auto"],
        "accuracy_fp32": accuracy["fp32"],
    }


def memory_at_two_sizes(backbone: str, n: int, work: Path) -> list[dict]:
    """Peak RSS of the batch job (`featx extract`) over n and 4n images: O(batch), not O(N)."""
    rows = []
    for size in (n, 4 * n):
        folder = work / f"memory-{size}"
        write_images(folder, size, seed=3)
        command = [
            sys.executable,
            "-c",
            (
                "import resource, sys; from featx.cli import main; code = main(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(code)"
            ),
            "extract",
            str(folder),
            "--backbone",
            backbone,
            "--weights",
            str(work / f"{backbone}.pth"),
            "--cache",
            str(work / f"memory-cache-{size}"),
            "--out",
            str(work / f"memory-{size}.parquet"),
            "--quiet",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rss, workers = map(float, done.stdout.strip().splitlines()[-1].split())
        rows.append({"backbone": backbone, "images": size, "peak_rss_mb": rss, "worker_peak_rss_mb": workers})
    return rows


def ratios(speed: pd.DataFrame) -> pd.DataFrame:
    """featx cold against each variant, per backbone; and against the fastest bare forward."""
    table = speed.pivot_table(index="backbone", columns="variant", values="images_per_s", sort=False)
    rows = []
    for name in ("featx", "featx_compiled"):
        featx = table[f"{name}_cold"]
        out = pd.DataFrame({"featx": name}, index=table.index)
        for variant in ("per_image", "dataloader", *PEERS):
            if variant in table:
                out[f"/ {variant}"] = featx / table[variant]
        bare = table[[c for c in table.columns if c.startswith("bare_")]]
        out["/ fastest bare"] = featx / bare.max(axis=1)
        out["fastest bare"] = bare.idxmax(axis=1)
        out["warm / cold"] = table[f"{name}_warm"] / featx
        if name == "featx" and "featx_int8_cold" in table:
            out["int8 / fp32"] = table["featx_int8_cold"] / table["featx_fp32_cold"]
        rows.append(out)
    return pd.concat(rows)


def extra_ratios(speed: pd.DataFrame) -> pd.DataFrame:
    """featx (cold) against the per-image loop, the DataLoader loop and full decoding, per photo set; and
    featx against the per-image loop beside a busy neighbour."""
    table = speed.pivot_table(index="backbone", columns="variant", values="images_per_s", sort=False)
    out = pd.DataFrame(index=table.index)
    for featx, baseline in (
        ("featx_cold", "per_image"),
        ("featx_cold", "dataloader"),
        ("featx_cold", "featx_fulldecode_cold"),
        ("featx_cold_busy", "per_image_busy"),
    ):
        if featx in table and baseline in table:
            out[f"{featx} / {baseline}"] = table[featx] / table[baseline]
    return out


def machine() -> str:
    from featx._machine import cpu_model

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores{' (avx512_bf16)' if 'avx512_bf16' in flags else ''}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", default="resnet18,resnet50,vgg16")
    parser.add_argument("--images", type=int, default=1024, help="images per variant (default 1024)")
    parser.add_argument("--skip-peers", action="store_true", help="leave out img2vec-pytorch and embetter")
    parser.add_argument(
        "--skip-fidelity", action="store_true", help="leave out the EfficientNet-Lite0 fidelity run"
    )
    parser.add_argument(
        "--photos", type=int, default=0, help="also N 12 MP and N 1080p JPEG photos (first backbone)"
    )
    parser.add_argument(
        "--busy", action="store_true", help="also per-image and featx beside a CPU-bound process"
    )
    parser.add_argument("--only-extras", action="store_true", help="run only --photos / --busy")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--backbone", "--weights", "--paths", "--warmup", "--cache", "--precision"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        return child(args)

    if not (REPO / "data" / "fashion_mnist" / "manifest.csv").exists():
        sys.exit("run `python data/make_sample_data.py` first")
    print(f"machine: {machine()}", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    speed_rows, fidelity_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
        for backbone in backbones if not args.only_extras else []:
            rows, fidelity = benchmark_backbone(backbone, args.images, work, peers=not args.skip_peers)
            speed_rows += rows
            fidelity_rows.append(fidelity)
        memory = pd.DataFrame(
            memory_at_two_sizes(backbones[0], args.images, work) if not args.only_extras else []
        )
        if args.photos or args.busy:
            torch.save(tvm.get_model(backbones[0], weights=None).state_dict(), work / f"{backbones[0]}.pth")
        if args.photos:
            speed_rows += benchmark_photos(backbones[0], args.photos, work)
        if args.busy:
            paths, warmup = work / "paths-busy.json", work / "warmup-busy.json"
            paths.write_text(json.dumps(write_images(work / "images-busy", args.images, seed=5)))
            warmup.write_text(json.dumps(write_images(work / "warmup-busy", WARMUP, seed=6)))
            for variant in ("per_image", "featx"):
                speed_rows += spawn(
                    variant,
                    backbones[0],
                    str(work / f"{backbones[0]}.pth"),
                    paths,
                    warmup,
                    work,
                    label=f"{backbones[0]} busy",
                    busy=True,
                )
    if not args.skip_fidelity:
        fidelity_rows.append(real_fidelity(1000, 500))

    speed = pd.DataFrame(speed_rows).assign(machine=machine())
    fidelity = pd.DataFrame(fidelity_rows)
    ratio = ratios(speed) if not args.only_extras else extra_ratios(speed)
    speed.to_csv(RESULTS / "speed.csv", index=False)
    fidelity.to_csv(RESULTS / "fidelity.csv", index=False)
    memory.to_csv(RESULTS / "memory.csv", index=False)
    pd.set_option("display.width", 200)
    print(f"machine: {machine()}\n")
    print(
        speed.pivot_table(index="variant", columns="backbone", values="images_per_s", sort=False)
        .round(1)
        .to_string(),
        "\n",
    )
    print(
        speed.pivot_table(index="variant", columns="backbone", values="peak_rss_mb", sort=False)
        .round(0)
        .to_string(),
        "\n",
    )
    print(ratio.round(2).to_string(), "\n")
    print(fidelity.round(4).to_string(index=False), "\n")
    print(memory.round(0).to_string(index=False))
    print(f"\nwritten: {RESULTS}/speed.csv, fidelity.csv, memory.csv")


if __name__ == "__main__":
    main()
