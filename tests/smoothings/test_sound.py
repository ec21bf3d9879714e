"""The sound-in-floating-point families: the exact sampler against the closed form, the TV bound,
the radius against an exact Neyman–Pearson worst case on the lattice, statistical coverage on a
linear classifier over grid inputs, the grid checks, and the paths (CLI, certifiers, ART)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch
from scipy import stats

from rs_plugin import (
    AnytimeCertifier,
    Gaussian,
    Laplace,
    RSValueError,
    SmoothedClassifier,
    SoundGaussian,
    SoundLaplace,
    SoundUniform,
    Uniform,
)
from rs_plugin.certification.radii import pack_certificates
from rs_plugin.cli import main
from rs_plugin.data import load_digits
from tests.analytic import LinearModel, assert_art_adapter_matches_core, binomial_upper_tail

FAMILIES = [SoundGaussian, SoundLaplace, SoundUniform]
IDS = [cls.name for cls in FAMILIES]
FALSE_ALARM = 1e-4


def _small(cls):
    """About 1.5 grid steps of noise: a table of a few dozen values."""
    return cls(0.375, grid="1/4")


def _mpf(value: Fraction) -> mpmath.mpf:
    return mpmath.mpf(value.numerator) / value.denominator


def _closed_form(smoothing) -> list[mpmath.mpf]:
    """P(j) = F(j + ½) − F(j − ½) on −J … J, from mpmath's own distributions."""
    law, h = smoothing.law, smoothing.grid
    with mpmath.workdps(40):
        if isinstance(smoothing, SoundGaussian):
            s = _mpf(Fraction(smoothing.sigma) / h)
            cdf = lambda t: mpmath.ncdf(t, 0, s)  # noqa: E731
        elif isinstance(smoothing, SoundLaplace):
            b = _mpf(Fraction(smoothing.sigma / math.sqrt(2.0)) / h)
            cdf = lambda t: 1 - mpmath.exp(-t / b) / 2 if t >= 0 else mpmath.exp(t / b) / 2  # noqa: E731
        else:
            lam = _mpf(Fraction(smoothing.sigma * math.sqrt(3.0)) / h)
            cdf = lambda t: min(max((t + lam) / (2 * lam), 0), 1)  # noqa: E731
        j = law.support
        return [cdf(mpmath.mpf(v) + 0.5) - cdf(mpmath.mpf(v) - 0.5) for v in range(-j, j + 1)]


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
@pytest.mark.parametrize("small", [True, False])
def test_alias_table_reproduces_the_integer_masses_exactly(cls, small):
    smoothing = _small(cls) if small else cls(0.25)
    law = smoothing.law
    assert law.table_probabilities() == law.probabilities()
    assert sum(law.probabilities()) == 1


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_sampled_law_is_within_eta_of_the_closed_form(cls):
    smoothing = _small(cls)
    q = smoothing.law.probabilities()
    p = _closed_form(smoothing)
    with mpmath.workdps(40):
        gaps = [abs(mpmath.mpf(a.numerator) / a.denominator - b) for a, b in zip(q, p, strict=True)]
        tv = sum(gaps) / 2
        assert tv <= smoothing.eta
        # Interior entries: two threshold roundings of at most 2⁻⁶³ each.
        assert max(gaps[1:-1]) <= 2 * mpmath.mpf(2) ** -63
    assert smoothing.eta < 1e-15


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_decoding_enumerates_the_alias_map(cls):
    """Every bin's boundary bits map where the alias table says: i below cut_i, alias_i above."""
    law = _small(cls).law
    low = 63 - law.index_bits
    bits, expected = [], []
    for i, (cut, alias) in enumerate(zip(law.cut, law.alias, strict=True)):
        for r in {0, max(cut - 1, 0), cut, (1 << low) - 1}:
            if r < 1 << low:
                bits.append((i << low) | r)
                expected.append(i if r < cut else alias)
    decoded = law.decode(torch.tensor(bits, dtype=torch.int64))
    assert decoded.tolist() == expected


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_a_million_draws_pass_a_chi_square_test_against_the_closed_form(cls):
    smoothing = _small(cls)
    draws = smoothing.law.sample_indices((1_000_000,), torch.Generator().manual_seed(5))
    counts = np.bincount(draws.numpy(), minlength=2 * smoothing.law.support + 1).astype(float)
    expected = np.array([float(v) for v in _closed_form(smoothing)]) * counts.sum()
    keep = expected >= 5
    observed = np.append(counts[keep], counts[~keep].sum())
    wanted = np.append(expected[keep], expected[~keep].sum())
    if wanted[-1] == 0:
        assert observed[-1] == 0
        observed, wanted = observed[:-1], wanted[:-1]
    wanted *= observed.sum() / wanted.sum()
    assert stats.chisquare(observed, wanted).pvalue > 1e-4


@pytest.mark.parametrize(
    ("cls", "continuous"),
    [(SoundGaussian, Gaussian), (SoundLaplace, Laplace), (SoundUniform, Uniform)],
)
def test_radius_is_the_continuous_radius_at_p_lower_minus_d_eta(cls, continuous):
    smoothing, plain = cls(0.25), continuous(0.25)
    p = torch.tensor([0.3, 0.5, 0.5 + 1e-14, 0.7, 0.99, 0.999999], dtype=torch.float64)
    dim = 784
    ours = smoothing.radii(p, dim)
    theirs = plain.radii(p - dim * smoothing.eta, dim)
    for norm in ours:
        assert torch.all(ours[norm] <= theirs[norm] + 1e-15), norm
        assert torch.allclose(ours[norm], theirs[norm], rtol=1e-9, atol=1e-12), norm
        assert torch.all(ours[norm] <= plain.radii(p, dim)[norm]), norm
        assert torch.all(ours[norm][:3] == 0), norm


def _worst_case(law: list[float], shift: int, p: float) -> float:
    """min over (randomised) sets A with P(A) = p of P(A − shift): Neyman–Pearson on the lattice,
    filling A with the points of smallest likelihood ratio P(j − shift) / P(j)."""
    size = len(law)
    moved = [law[j - shift] if 0 <= j - shift < size else 0.0 for j in range(size)]
    order = sorted((j for j in range(size) if law[j] > 0), key=lambda j: moved[j] / law[j])
    need, kept = p, 0.0
    for j in order:
        take = min(1.0, need / law[j])
        kept += take * moved[j]
        need -= take * law[j]
        if need <= 0:
            break
    return kept


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_lattice_worst_case_keeps_half_at_the_certified_radius(cls):
    """1-D: at every grid shift inside the certified radius, the worst set of probability
    p_lower under the rounded law keeps more than 1/2 under the shifted law."""
    smoothing = _small(cls)
    law = smoothing.law.target()
    h = float(smoothing.grid)
    checked = 0
    for p in (0.6, 0.75, 0.9, 0.97, 0.995, 0.9999):
        radius = float(smoothing.radius(torch.tensor([p], dtype=torch.float64), 1)[0])
        shift = 1
        while shift * h < radius:
            assert _worst_case(law, shift, p) > 0.5 - 1e-12, (p, shift, radius)
            checked += 1
            shift += 1
    assert checked >= 5


def _grid_cases(step: float, seed: int = 21, inputs: int = 60, dim: int = 16):
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for kind in ("dense", "sparse1", "equal"):
        w = torch.ones(dim) if kind == "equal" else torch.randn(dim, generator=generator)
        if kind == "sparse1":
            w = torch.zeros(dim).index_fill(0, torch.tensor([3]), 1.0)
        w = w / w.norm()
        x = torch.round(torch.rand(inputs, dim, generator=generator) / step) * step
        b = -float(x.mean(0) @ w)
        cases.append((LinearModel(w, b), x))
    return cases


def _grid_distance(model: LinearModel, x: torch.Tensor, step: float, kind: str, norm: str):
    """Distance from each grid input to the nearest grid point f classifies otherwise: exact for
    a 1-sparse w (steps along its coordinate), else the real-valued distance to the boundary,
    which is smaller (so violations are over-counted, never missed)."""
    margin = model.margin(x).double()
    if kind == "sparse1":
        m = margin / float(model.w.abs().max())
        steps = torch.where(m > 0, torch.ceil(m / step), torch.floor(-m / step) + 1)
        return steps * step
    dual = {"l1": math.inf, "l2": 2.0, "linf": 1.0}[norm]
    return margin.abs() / float(torch.linalg.vector_norm(model.w.double(), ord=dual))


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_linear_classifier_certificates_on_grid_inputs_are_sound(cls):
    """g̃ of a linear f under symmetric rounded noise is f on grid points; the certificate covers
    grid points, and its violations (radius past the nearest grid point f classifies otherwise,
    or a wrong class) stay within α."""
    step = 1 / 8
    smoothing = cls(0.5, grid="1/8")
    alpha, total, violations, certified = 0.05, 0, 0, 0
    for case, (model, x) in enumerate(_grid_cases(step)):
        kind = ("dense", "sparse1", "equal")[case]
        certs = SmoothedClassifier(model.eval(), smoothing, 2).certify(
            x, n0=50, n=1000, alpha=alpha, batch_size=20_000, seed=case
        )
        bad = certs.prediction != model.label(x)
        for norm, radius in certs.radii.items():
            bad = bad | (radius > _grid_distance(model, x, step, kind, norm))
        violations += int(((certs.prediction >= 0) & bad).sum())
        certified += int((certs.prediction >= 0).sum())
        total += x.shape[0]
    assert certified > total // 2
    assert binomial_upper_tail(violations, total, alpha) >= FALSE_ALARM, violations


def test_noisy_inputs_are_exact_grid_values_and_both_paths_agree():
    smoothing = SoundGaussian(0.25, grid="1/255")
    x = torch.randint(0, 256, (3, 1, 4, 4)).float() / 255
    out = torch.empty(6, 1, 4, 4)
    smoothing.perturb_(out, x[:1], torch.Generator().manual_seed(2))
    again = smoothing.perturb(x[:1].expand(6, -1, -1, -1), torch.Generator().manual_seed(2))
    assert torch.equal(out, again)
    index = torch.round(out.double() * 255)
    assert torch.equal(out, (index.float() * (1 / 255)))  # fl(j · h): a function of j alone
    leaf = x.clone().requires_grad_(True)
    smoothing.perturb(leaf, torch.Generator().manual_seed(0)).sum().backward()
    assert leaf.grad is not None and torch.all(leaf.grad == 1)


def test_grid_checks_name_the_grid_and_rounding_is_opt_in():
    model = LinearModel(torch.ones(4), 0.0).eval()
    off = torch.full((2, 4), 0.3)
    with pytest.raises(RSValueError, match="grid of step 1/255"):
        SmoothedClassifier(model, SoundGaussian(0.25), 2).certify(off, n0=10, n=100)
    rounded = SmoothedClassifier(model, SoundGaussian(0.25, round_inputs=True), 2)
    assert rounded.certify(off, n0=10, n=100).prediction.shape == (2,)
    with pytest.raises(RSValueError, match="grid"):
        SoundGaussian(0.25, grid="-1/3")
    with pytest.raises(RSValueError, match="round_inputs"):
        SoundGaussian(0.25, round_inputs="maybe")
    assert SoundLaplace(0.5, grid=0.0625).config() == {
        "name": "laplace_sound",
        "sigma": 0.5,
        "grid": "1/16",
        "round_inputs": False,
        "sound_fp": True,
    }


def test_attack_points_move_onto_the_grid_towards_the_input():
    smoothing = SoundGaussian(0.25, grid="1/16")
    x = torch.tensor([[0.5, 0.25, 0.0]])
    candidate = torch.tensor([[0.53, 0.21, 0.2]])
    point = smoothing.attack_point(x, candidate)
    assert torch.allclose(point, torch.tensor([[0.5, 0.25, 0.1875]]))
    assert torch.all((point - x).abs() <= (candidate - x).abs())


def test_cli_sound_mode_records_resume_and_anytime(tmp_path):
    out = tmp_path / "sound.jsonl"
    args = ["certify", "--smoothing", "gaussian", "--sound", "--grid", "1/16", "--limit", "3"]
    assert main([*args, "-n", "300", "--n0", "30", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["smoothing"]["sound_fp"] is True and record["smoothing"]["grid"] == "1/16"
        assert record["smoothing"]["name"] == "gaussian_sound"
    assert any(r["radius"] > 0 for r in records)
    before = out.read_text()
    assert main([*args, "-n", "300", "--n0", "30", "--out", str(out), "--resume"]) == 0
    assert out.read_text() == before
    anytime = tmp_path / "anytime.jsonl"
    extra = ["--certifier", "anytime", "--radius", "0.25", "-n", "2000", "--out", str(anytime)]
    assert main([*args, *extra]) == 0
    assert all(
        json.loads(line)["smoothing"]["sound_fp"] for line in anytime.read_text().splitlines()
    )


def test_cli_sound_refusals(tmp_path, capsys):
    out = str(tmp_path / "x.jsonl")
    assert main(["certify", "--smoothing", "exp_inf", "--sound", "--out", out]) == 2
    assert "--sound: expected a --smoothing with a sound mode" in capsys.readouterr().err
    assert main(["certify", "--grid", "1/16", "--out", out]) == 2
    assert main(["certify", "--sound", "--limit", "2", "-n", "100", "--out", out]) == 2
    err = capsys.readouterr().err
    # The data is checked against the grid when it loads: no --out file is left behind.
    assert "error: --data: expected inputs on the grid of step 1/255" in err, err
    assert not Path(out).exists()
    assert main(["certify", "--sound", "--grid", "1/3", "--limit", "2", "--out", out]) == 2
    assert "--data: expected inputs on the grid of step 1/3" in capsys.readouterr().err
    assert not Path(out).exists()


def test_cli_sound_grid_is_checked_on_every_input_past_the_first_chunk(tmp_path, capsys):
    # The check runs in chunks of 1 024 inputs; an input off the grid in the second is found.
    x, y = load_digits("test")
    x, y = x.repeat(4, 1, 1, 1)[:1100].clone(), y.repeat(4)[:1100]
    x[1050, 0, 3, 3] += 1 / 32
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    out = tmp_path / "x.jsonl"
    argv = ["certify", "--data", str(tmp_path / "d.npz"), "--sound", "--grid", "1/16"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--data: expected inputs on the grid of step 1/16" in err and "0.5 steps off" in err
    assert not out.exists()


def test_anytime_certifier_runs_the_sound_mode_soundly():
    model, x = _grid_cases(1 / 8, inputs=40)[1]
    certifier = AnytimeCertifier(model.eval(), SoundGaussian(0.5, grid="1/8"), 2, radius=0.1)
    certs = certifier.certify(x, n0=50, n=2000, alpha=0.05, seed=3)
    ok = certs.prediction >= 0
    assert bool(ok.any())
    assert torch.all(certs.prediction[ok] == model.label(x)[ok])


def test_art_adapter_sound_mode_matches_the_core():
    radii = assert_art_adapter_matches_core(SoundGaussian(0.25, grid="1/16"), inputs=4)
    assert np.all(np.isfinite(radii))


def test_art_randomized_smoothing_sound_flag():
    from rs_plugin.adapters.art import PyTorchRandomizedSmoothing
    from rs_plugin.data import load_demo_model, load_digits

    x, _ = load_digits("test")
    estimator = PyTorchRandomizedSmoothing(
        load_demo_model(),
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        scale=0.25,
        sound=True,
        grid="1/16",
    )
    assert isinstance(estimator.smoothing, SoundGaussian) and estimator.scale == 0.25
    prediction, radius = estimator.certify(x[:3].numpy(), n=200, batch_size=200)
    assert prediction.shape == (3,) and np.all(radius >= 0)
    with pytest.raises(RSValueError, match="sound"):
        PyTorchRandomizedSmoothing(
            load_demo_model(),
            torch.nn.CrossEntropyLoss(),
            (1, 8, 8),
            10,
            sound=True,
            smoothing=Gaussian(0.25),
        )


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_in_place_sampling_draws_what_the_reference_decoding_draws(cls):
    """sample_ (reused buffers, the engine's path) equals sample_indices (fresh tensors, the
    path the χ² test checks) from the same generator state, across changing shapes."""
    law = cls(0.25).law
    for shape in [(64, 30), (5, 30), (64, 30)]:
        out = torch.empty(shape)
        law.sample_(out, torch.Generator().manual_seed(9))
        reference = law.sample_indices(shape, torch.Generator().manual_seed(9))
        assert torch.equal(out, reference.to(out.dtype))


@pytest.mark.parametrize("cls", FAMILIES, ids=IDS)
def test_abstention_is_decided_on_the_discounted_bound(cls):
    """The certificate is about the rounded law P, sampled as Q with |P - Q| <= d·eta per class:
    a p_lower above 1/2 by less than d·eta does not determine g(x) under P."""
    smoothing, dim = cls(0.25), 3072
    margin = dim * smoothing.eta
    assert 0 < margin < 1e-6
    p_lower = torch.tensor([0.5 + margin / 2, 0.5 + 2 * margin], dtype=torch.float64)
    votes = torch.tensor([[10, 0], [10, 0]])
    top = torch.tensor([0, 0])
    sound = pack_certificates(smoothing, [0, 1], top, p_lower, votes, votes, 10, 10, 0.001, dim=dim)
    assert sound.prediction.tolist() == [-1, 0]
    assert float(sound.radius[0]) == 0.0
    plain = pack_certificates(
        smoothing.continuous, [0, 1], top, p_lower, votes, votes, 10, 10, 0.001, dim=dim
    )
    assert plain.prediction.tolist() == [0, 0]
