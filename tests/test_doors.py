"""One declaration, every door: the network's options (NetworkSpec) and how it runs (RunOptions) reach
every way in alike, and each door refuses a bad value in its own name before any work."""

import argparse
import dataclasses

import numpy as np
import pytest
from conftest import photo
from test_cache import featx_cli

import featx
from featx import NetworkSpec, ParameterError, PretrainedFeatures, extract_features, run_job
from featx.cli import NETWORK_COMMANDS, parser
from featx.engines import RunOptions
from featx.engines.ray.network import RemoteNetwork
from featx.estimators.transformer import checked_transformer
from featx.evaluate import transfer_report
from featx.models.network import FrozenNetwork, Network

SPEC_FIELDS = [field.name for field in dataclasses.fields(NetworkSpec)]
RUN_FLAGS = [field.name for field in dataclasses.fields(RunOptions) if field.metadata]


def flags_of(command: str) -> set[str]:
    """The long flags of one ``featx COMMAND``."""
    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag for action in subcommands.choices[command]._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", sorted(NETWORK_COMMANDS))
def test_every_command_that_builds_a_network_takes_every_option_of_the_network_and_of_the_run(command):
    expected = {"--" + name.replace("_", "-") for name in SPEC_FIELDS + RUN_FLAGS}
    assert expected <= flags_of(command)


def test_the_transformer_s_parameters_are_the_spec_s_the_run_s_and_its_own_nothing_else():
    own = {"cache_dir", "on_error", "progress"}
    params = set(PretrainedFeatures._get_param_names())
    assert set(SPEC_FIELDS) <= params and set(RUN_FLAGS) <= params
    assert params == set(SPEC_FIELDS) | set(RUN_FLAGS) | own


@pytest.mark.parametrize(
    ("door", "call"),
    [
        ("extract_features", lambda: extract_features([photo()], "tiny", weights=None, batch_size=0)),
        ("run_job", lambda: run_job("nowhere", "tiny", cache_dir="nowhere", batch_size=0)),
        (
            "transfer_report",
            lambda: transfer_report([photo()] * 4, list("aabb"), backbones="tiny", batch_size=0),
        ),
        ("PretrainedFeatures", lambda: PretrainedFeatures("tiny", batch_size=0).fit([photo()])),
    ],
)
def test_each_python_door_refuses_a_bad_run_option_in_its_own_name_before_any_work(door, call):
    with pytest.raises(
        ParameterError, match=rf"The 'batch_size' parameter of {door} must be an integer >= 1"
    ):
        call()


@pytest.mark.parametrize(
    ("door", "call"),
    [
        ("extract_features", lambda: extract_features([photo()], "tiny", precision="fp64")),
        ("run_job", lambda: run_job("nowhere", "tiny", cache_dir="nowhere", precision="fp64")),
        (
            "transfer_report",
            lambda: transfer_report([photo()] * 4, list("aabb"), backbones="tiny", precision="fp64"),
        ),
        (
            "FineTunedClassifier",
            lambda: featx.FineTunedClassifier("no_such_net").fit([photo()] * 2, ["a", "b"]),
        ),
    ],
)
def test_each_python_door_checks_the_network_s_options_as_the_spec_does(door, call):
    with pytest.raises(ParameterError, match=rf"{door}|no_such_net"):
        call()


def test_a_misspelt_parameter_is_named_with_the_ones_a_door_takes():
    with pytest.raises(ParameterError, match=r"extract_features got 'batch_sise'.*batch_size"):
        extract_features([photo()], "tiny", batch_sise=4)
    with pytest.raises(
        ParameterError, match=r"run_job got 'layr'.*layer.*batch_size.*local engine's \(none\)"
    ):
        run_job("nowhere", "tiny", cache_dir="nowhere", layr="x")
    with pytest.raises(ParameterError, match=r"transfer_report sets \['layer'\] itself"):
        transfer_report([photo()] * 4, list("aabb"), backbones="tiny", layer="features")


def test_extract_features_gives_the_transformer_s_vectors(tmp_path):
    images = [photo(seed) for seed in range(3)]
    settings = {"weights": None, "precision": "fp32", "num_workers": 0, "cache_dir": tmp_path}
    X = extract_features(images, "tiny", **settings)
    np.testing.assert_array_equal(X, PretrainedFeatures("tiny", **settings).fit_transform(images))


def test_a_command_s_network_options_reach_the_network_it_builds(monkeypatch, tmp_path):
    """featx tune took four of the spec's fields and ignored --min-cosine; every field now arrives."""
    built = []

    def record(spec, **_):
        built.append(spec)
        raise ParameterError("stop here")

    monkeypatch.setattr("featx.models.build.build_network", record)
    result = featx_cli(
        "tune", "--backbone", "tiny", "--weights", "none", "--layer", "features", "--min-cosine", "0.5",
        "--decoding", "full", "--compile", "off", "--pooling", "max",
    )  # fmt: skip
    assert result.returncode == 1 and "stop here" in result.stderr
    assert built == [
        NetworkSpec(
            "tiny",
            weights="none",
            layer="features",
            min_cosine=0.5,
            decoding="full",
            compile=False,
            pooling="max",
        )
    ]


def test_the_job_reads_its_vectors_back_in_the_batch_size_it_was_given(monkeypatch, tmp_path):
    """A vector that fails its checksum when the job writes --out is recomputed in the job's batch size."""
    from PIL import Image

    from featx import FeatureCache, build_network
    from featx.inputs.manifests import load_manifest
    from featx.job import run_extract_job

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(5):
        Image.fromarray(photo(seed)).save(folder / f"{seed}.png")
    network = build_network("tiny", weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    run_extract_job(load_manifest(folder), network, namespace, RunOptions(batch_size=5, num_workers=0))
    (vectors_file,) = namespace.path.glob("*.vectors.npy")
    data = bytearray(vectors_file.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last vector: its checksum no longer matches
    vectors_file.write_bytes(bytes(data))
    seen = []
    original = featx.extract.compute_missing
    monkeypatch.setattr(
        featx.extract, "compute_missing", lambda *args: seen.append(args[-1]) or original(*args)
    )
    summary = run_extract_job(
        load_manifest(folder),
        network,
        namespace,
        RunOptions(batch_size=3, num_workers=0),
        out=tmp_path / "f.npy",
    )
    assert summary.out is not None and seen and {options.batch_size for options in seen} == {3}


def test_the_local_and_the_remote_network_both_are_what_an_engine_needs():
    members = {name for name in vars(Network) if not name.startswith("_")} | {"__call__"}
    remote = {field.name for field in dataclasses.fields(RemoteNetwork)} | set(vars(RemoteNetwork))
    assert members <= remote, members - remote
    local = featx.build_network("tiny", weights=None, precision="fp32")
    assert isinstance(local, FrozenNetwork) and all(hasattr(local, member) for member in members)


def test_a_door_s_parameters_are_checked_without_loading_a_network():
    transformer = checked_transformer("a door", {"backbone": "tiny", "weights": None, "min_cosine": 0.5})
    assert not hasattr(transformer, "_loaded")
    with pytest.raises(ParameterError, match=r"The 'min_cosine' parameter of a door must be a number > 0"):
        checked_transformer("a door", {"backbone": "tiny", "min_cosine": 0})
