"""The floating-point probe flags a model that reads the rounding of its input and passes the
shipped digits model; the audit reports the mode of a certificate file and the probe."""

from __future__ import annotations

import json

import torch

from rs_plugin import Gaussian, SoundGaussian
from rs_plugin.auditing.fp_probe import FLAG_FRACTION, probe_floating_point
from rs_plugin.cli import main
from rs_plugin.data import load_demo_model, load_digits
from tests.fp_models import RoundingResidue


def test_the_counterexample_model_is_flagged_and_the_demo_model_is_not():
    x = load_digits("test")[0][:16]
    hostile = probe_floating_point(RoundingResidue().eval(), Gaussian(0.25), x, seed=1)
    assert hostile.flagged and hostile.largest > 10 * FLAG_FRACTION
    finding = hostile.diagnostic()
    assert finding is not None and "sound mode" in finding.fix
    # A sound smoothing probes with the float noise it replaces: the model is still flagged.
    assert probe_floating_point(
        RoundingResidue().eval(), SoundGaussian(0.25, grid="1/16"), x
    ).flagged
    honest = probe_floating_point(load_demo_model(), Gaussian(0.25), x, seed=1)
    assert not honest.flagged and honest.diagnostic() is None
    assert honest.samples == 16 * 64


def test_audit_reports_the_sound_mode_and_the_probe(tmp_path, capsys):
    certificates = tmp_path / "sound.jsonl"
    args = ["certify", "--sound", "--grid", "1/16", "--limit", "3", "-n", "300", "--n0", "30"]
    assert main([*args, "--out", str(certificates)]) == 0
    out = tmp_path / "audit"
    audit = ["audit", "--certificates", str(certificates), "--attacks", "pgd", "--probe-fp"]
    code = main([*audit, "--predict-n", "200", "--out", str(out)])
    assert code in (0, 1)
    assert "certificates issued in the sound mode" in capsys.readouterr().out
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "issued in the sound mode (inputs on the grid of step 1/16" in report
    assert "Low-bit probe" in report and "not flagged" in report


class _NormalisesInPlace(torch.nn.Module):
    """The demo model behind the common in-place normalisation (x -= 0.5; x /= 0.25)."""

    def __init__(self) -> None:
        super().__init__()
        self.f = load_demo_model().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5).div_(0.25)
        return self.f(x * 0.25 + 0.5)


def test_a_model_that_writes_its_input_is_probed_on_what_was_drawn():
    """The probe's variants are made before any forward and every forward gets a copy: an
    in-place normalisation changes nothing (it was flagged at ~25 % when the variants were
    made from the tensor the model had written)."""
    x, _ = load_digits("test")
    honest = probe_floating_point(load_demo_model().eval(), Gaussian(0.25), x[:8], seed=3)
    writes = probe_floating_point(_NormalisesInPlace().eval(), Gaussian(0.25), x[:8], seed=3)
    assert writes.fractions == honest.fractions
    assert max(writes.fractions.values()) < FLAG_FRACTION


def test_a_file_claiming_the_sound_mode_for_a_float_smoothing_is_refused(tmp_path, capsys):
    certificates = tmp_path / "float.jsonl"
    args = ["certify", "--limit", "2", "-n", "100", "--n0", "10"]
    assert main([*args, "--out", str(certificates)]) == 0
    lines = certificates.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        record["smoothing"] = {**record["smoothing"], "sound_fp": True}
    certificates.write_text("".join(json.dumps(r) + "\n" for r in records))
    audit = ["audit", "--certificates", str(certificates), "--attacks", "pgd"]
    assert main([*audit, "--out", str(tmp_path / "audit")]) == 2
    err = capsys.readouterr().err
    assert "--certificates: expected a smoothing description whose sound_fp" in err, err
    assert "Traceback" not in err
