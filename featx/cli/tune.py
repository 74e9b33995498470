"""``featx tune``: the precision and decoding 'auto' pick on this machine, and why."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    tune = commands.add_parser(
        "tune", help="show (measuring once, if needed) the precision and decoding 'auto' pick here, and why"
    )
    tune.add_argument("--again", action="store_true", help="forget the remembered result and measure again")
    tune.set_defaults(run=run)
    return tune


def run(args: argparse.Namespace) -> int:
    from featx.cli._network import network_spec
    from featx.models import tuning
    from featx.models.build import build_network

    spec = network_spec(args)
    if args.again:
        network = build_network(spec.replace(precision="fp32"))
        identity = {k: v for k, v in network.fingerprint.items() if k != "precision"}
        tuning.forget(tuning.tuning_key(network.device, identity))
    network = build_network(spec)
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
