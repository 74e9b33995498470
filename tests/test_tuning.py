"""precision="auto" is decided by measurement on this machine, remembered, and never overrides the user."""

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import photo

from featx import build_network
from featx.engines.base import RunOptions
from featx.extract import extract
from featx.models import precision, quantize, tuning
from featx.options import MIN_COSINE


@pytest.fixture
def own_file(tmp_path, monkeypatch):
    path = tmp_path / "tuning.json"
    monkeypatch.setenv("FEATX_TUNING_FILE", str(path))
    return path


def count_trials(monkeypatch):
    calls = []
    real = precision.Trial.__call__

    def counted(self, precision):
        calls.append(precision)
        return real(self, precision)

    monkeypatch.setattr(precision.Trial, "__call__", counted)
    return calls


def test_auto_measures_once_stores_the_result_and_reuses_it(own_file, monkeypatch):
    calls = count_trials(monkeypatch)
    first = build_network("tiny", weights=None)
    candidates = precision.precision_candidates(first.device)
    assert sorted(set(calls)) == sorted(candidates) and len(calls) == tuning.ROUNDS * len(candidates)
    (record,) = json.loads(own_file.read_text())["entries"].values()
    assert record["precision"] == first.precision == first.fingerprint["precision"]
    faithful = {p: t for p, t in record["trials"].items() if t["min_cosine"] >= MIN_COSINE}
    assert first.precision == max(faithful, key=lambda p: faithful[p]["images_per_s"])
    calls.clear()
    again = build_network("tiny", weights=None)
    assert calls == [] and again.precision == first.precision  # remembered: no second trial


def test_an_explicit_precision_is_honoured_and_never_measured(own_file, monkeypatch):
    calls = count_trials(monkeypatch)
    network = build_network("tiny", weights=None, precision="fp32")
    assert calls == [] and network.precision == "fp32" and not own_file.exists()


def test_a_candidate_whose_fidelity_fails_is_never_chosen_however_fast(own_file, monkeypatch):
    def trial(precision):
        return (1000.0, 0.5) if precision == "bf16" else (10.0, 1.0)

    monkeypatch.setattr(precision, "precision_candidates", lambda device: ["fp32", "bf16"])
    record = precision.choose_precision("auto", "key", torch.device("cpu"), trial)
    assert record["precision"] == "fp32" and "bf16 1000.0 images/s (cosine 0.5)" in record["why"]


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "entries": {}}', "[1, 2, 3]"])
def test_a_corrupt_or_foreign_tuning_file_is_ignored_with_a_warning_and_rewritten(own_file, content):
    own_file.write_text(content)
    with pytest.warns(UserWarning, match="ignoring the tuning file"):
        network = build_network("tiny", weights=None)
    assert json.loads(own_file.read_text())["format"] == tuning.FORMAT
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file reads cleanly
        assert build_network("tiny", weights=None).precision == network.precision


def test_the_key_names_the_processor_torch_and_network(own_file):
    build_network("tiny", weights=None)
    (key,) = json.loads(own_file.read_text())["entries"]
    assert key.startswith(tuning.device_model(build_network("tiny", weights=None, precision="fp32").device))
    assert "|torch " in key and "|tiny|" in key and "|32px" in key


def test_an_unwritable_tuning_file_only_costs_measuring_again(tmp_path, monkeypatch):
    (tmp_path / "home").write_text("a file where the folder should be")
    monkeypatch.setenv("FEATX_TUNING_FILE", str(tmp_path / "home" / "tuning.json"))
    with pytest.warns(UserWarning, match="the tuning file: cannot write .*the next run measures again"):
        network = build_network("tiny", weights=None)
    assert network.precision in ("fp32", "bf16", "int8") and sorted(p.name for p in tmp_path.iterdir()) == [
        "home"
    ]


def test_featx_tune_shows_both_choices_auto_made_and_measures_only_once(own_file, monkeypatch, capsys):
    from featx.cli import main

    calls = count_trials(monkeypatch)
    assert main(["tune", "--backbone", "tiny", "--weights", "none"]) == 0
    first, trials = capsys.readouterr().out, len(calls)
    assert main(["tune", "--backbone", "tiny", "--weights", "none"]) == 0
    assert capsys.readouterr().out == first and len(calls) == trials > 0  # measured once, then read back
    assert "precision " in first.splitlines()[0] and first.splitlines()[1].startswith("why: fastest")
    # on a CPU the decoding workers decode beside the network: no trial, and the reason says so
    assert "decoding reduced: on cpu the decoding workers decode beside the network" in first


def test_a_remembered_int8_choice_is_built_before_a_job_starts_its_decoding_thread(own_file, monkeypatch):
    """torch.fx tracing (int8) patches nn.Module.__call__ process-wide: built during a job, it broke the
    decoding thread's resize ("module is not installed as a submodule")."""
    first = build_network("tiny", weights=None, precision="fp32")
    if "int8" not in precision.precision_candidates(first.device):
        pytest.skip("int8 is not a candidate on this CPU")
    key = tuning.tuning_key(first.device, first.fingerprint, first.spec.min_cosine)
    tuning.remember(key, "precision", "int8")
    calls = []
    real = quantize.quantize
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: calls.append(1) or real(*a, **k))
    network = build_network("tiny", weights=None)
    assert network.precision == "int8" and calls == [1]
    vectors = extract(
        [photo(i) for i in range(6)], network, options=RunOptions(batch_size=2, num_workers=0, progress=False)
    )
    assert calls == [1] and vectors.n_computed == 6 and np.isfinite(vectors.features).all()
