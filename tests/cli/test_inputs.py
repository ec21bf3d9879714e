"""Inputs a user brings: unlabelled .npy / .npz files and a state-dict .pt model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rs_plugin.cli import main
from rs_plugin.data import load_digits, shipped_model

FAST = ["--limit", "3", "-n", "100", "--n0", "20"]


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def digits_npy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    x, y = load_digits("test")
    np.save(folder / "x.npy", x[:3].numpy())
    np.savez(folder / "xy.npz", x=x[:3].numpy(), y=y[:3].numpy())
    return folder


def test_an_unlabelled_npy_certifies_with_predictions_and_radii_only(digits_npy, tmp_path, capsys):
    out, labelled = tmp_path / "u.jsonl", tmp_path / "l.jsonl"
    assert main(["certify", "--data", str(digits_npy / "x.npy"), *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no labels in the data" in printed and "certified accuracy" not in printed
    assert "certified, l2 radius >= 0 " in printed
    records = _records(out)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all("label" not in r and "correct" not in r for r in records)
    # The same inputs with labels: the same predictions and radii, plus correctness.
    data = str(digits_npy / "xy.npz")
    assert main(["certify", "--data", data, *FAST, "--out", str(labelled)]) == 0
    with_labels = {r["index"]: r for r in _records(labelled)}
    for record in records:
        twin = with_labels[record["index"]]
        assert (record["prediction"], record["radius"]) == (twin["prediction"], twin["radius"])
        assert type(twin["correct"]) is bool and type(twin["label"]) is int
        # Every field typed as its meaning: counts and classes integers, bounds floats.
        assert all(type(twin[k]) is int for k in ("index", "prediction", "count", "n0", "n"))
        assert all(type(twin[k]) is float for k in ("radius", "p_lower", "alpha"))
        assert type(twin["abstain"]) is bool


def test_the_audit_says_why_it_needs_labels(digits_npy, tmp_path, capsys):
    args = ["audit", "--data", str(digits_npy / "x.npy"), "--limit", "2"]
    assert main([*args, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "--data: expected labelled inputs" in err and "rs-plugin certify" in err
    assert not (tmp_path / "report" / "report.json").exists()


def test_a_state_dict_as_model_points_to_a_factory_and_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save(shipped_model("digits").state_dict(), tmp_path / "net.pt")
    assert main(["certify", "--model", "net.pt", *FAST, "--out", "never.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "a state dict" in err and "--model package.module:factory" in err
    assert "--weights net.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never.jsonl").exists()
    # The hint's command: a factory that builds the network, the weights loaded into it.
    (tmp_path / "user_net_for_weights.py").write_text(
        "from rs_plugin.data import DemoCNN\n\ndef build():\n    return DemoCNN()\n"
    )
    args = ["certify", "--model", "user_net_for_weights:build", "--weights", "net.pt", *FAST]
    assert main([*args, "--out", "w.jsonl"]) == 0
    assert main(["certify", *FAST, "--out", "demo.jsonl"]) == 0
    ours, demo = _records(tmp_path / "w.jsonl"), _records(tmp_path / "demo.jsonl")
    assert [(r["prediction"], r["radius"]) for r in ours] == [
        (r["prediction"], r["radius"]) for r in demo
    ]
    torch.save({"other": torch.zeros(1)}, tmp_path / "wrong.pt")
    args[args.index("net.pt")] = "wrong.pt"
    assert main([*args, "--out", "never.jsonl"]) == 2
    assert "--weights: expected a state dict with exactly" in capsys.readouterr().err
