"""``featx tune``: the precision and decoding 'auto' pick on this machine, and why."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune", help="show (measuring once, if needed) the precision and decoding 'auto' pick here, and why"
    )
    tune.add_argument("--backbone", default="resnet50")
    tune.add_argument(
        "--weights", default="DEFAULT", help="DEFAULT, a weights name, a file, or none (random init)"
    )
    tune.add_argument("--layer", help="graph node (default: the last pooling layer)")
    tune.add_argument("--device", default="auto")
    tune.add_argument("--again", action="store_true", help="forget the remembered result and measure again")
    tune.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from featx.models import tuning
    from featx.models.network import FrozenNetwork, NetworkSpec

    spec = NetworkSpec(args.backbone, weights=args.weights, layer=args.layer, device=args.device)
    if args.again:
        network = FrozenNetwork(spec.replace(precision="fp32"))
        identity = {k: v for k, v in network.fingerprint.items() if k != "precision"}
        tuning.forget(tuning.tuning_key(network.device, identity))
    network = FrozenNetwork(spec)
    choice = network.precision_choice
    print(
        f"{network.backbone.name} on {tuning.device_model(network.device)} ({network.device}): "
        f"precision {choice['precision']}"
    )
    print(f"why: {choice['why']}")
    print(f"decided: {choice.get('decided', '?')}; remembered in {tuning.tuning_path()}")
    decoding = network.decoding_choice
    print(f"decoding {decoding['decoding']}: {decoding['why']}")
    return 0
