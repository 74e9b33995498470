"""What starting featx costs (``import featx``, ``featx --help``, ``featx cache info``, ``featx
backbones``), this tree beside another one.

    python benchmarks/zoo.py                          # this tree only
    python benchmarks/zoo.py --baseline /tmp/before   # a checkout of an earlier commit, measured alongside

The zoo files resolve names lazily (no model is built, timm is not imported, by ``import featx``), so
the import must not slow down as torchvision's 80 and timm's 1,800 names become available. Each figure
is the median wall time of ``--repeats`` fresh processes, interleaved between the trees; ``list
everything`` prints every name with family and default weights, ``--filter 'convnext*'`` also computes
each listed model's feature size on the meta device. ``--help`` and ``cache info`` (on an empty folder)
run no network: since the public names load on first use, they import no torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from featx._machine import cpu_model  # noqa: E402

EMPTY_FOLDER = tempfile.TemporaryDirectory(prefix="featx-zoo-bench-")  # removed when the script ends
COMMANDS = {
    "import featx": ["-c", "import featx"],
    "featx --help": ["-m", "featx", "--help"],
    "featx cache info (empty folder)": ["-m", "featx", "cache", "info", EMPTY_FOLDER.name],
    "featx backbones (list everything)": ["-m", "featx", "backbones"],
    "featx backbones --filter 'convnext*'": ["-m", "featx", "backbones", "--filter", "convnext*"],
}


def wall_seconds(tree: Path, arguments: list[str]) -> float | None:
    """One fresh process with ``tree`` first on the path; None where that tree has no such command."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], env=env, capture_output=True, cwd=tree)
    return time.perf_counter() - start if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, help="another featx checkout to measure beside this one")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trees = {"this tree": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for command, arguments in COMMANDS.items():
            for label, tree in trees.items():
                seconds = wall_seconds(tree, arguments)
                if seconds is not None:
                    times.setdefault((command, label), []).append(seconds)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; median of {args.repeats} fresh processes")
    print(f"{'':40}" + "".join(f"{label:>14}" for label in trees))
    for command in COMMANDS:
        cells = []
        for label in trees:
            found = times.get((command, label))
            cells.append(f"{statistics.median(found):13.2f}s" if found else f"{'-':>14}")
        print(f"{command:40}" + "".join(cells))
    names = subprocess.run(
        [sys.executable, "-c", "import featx; print(len(featx.list_backbones()))"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    print(f"names listed by this tree: {names.stdout.strip()}")


if __name__ == "__main__":
    main()
