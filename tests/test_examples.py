"""Every script in examples/ runs and prints what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Each test runs an example script in a fresh interpreter (seconds to a minute each).
pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_certify_digits_example_runs():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "certify_digits.py"), "--inputs", "4", "-n", "300"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["index", "label", "prediction", "radius", "p_lower"]
    assert len(lines) == 1 + 4 + 1
    assert lines[-1].startswith("certified accuracy at l2 radius 0.25:")


def test_art_swap_in_example_runs():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "art_swap_in.py"), "--epochs", "2", "-n", "300"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "smoothed accuracy",
        "certified accuracy at l2 radius 0.25",
        "soft smoothed accuracy under l2 PGD, eps 0.25",
    ]
    values = [float(line.rsplit(":", 1)[1]) for line in lines]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[0] > 0.5


def test_compare_smoothings_example_writes_its_table_and_plot(tmp_path):
    args = ["--inputs", "6", "-n", "200", "--epochs", "1", "--steps", "2", "--sigmas", "0.25"]
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "compare_smoothings.py"),
            *args,
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    table = (tmp_path / "smoothings_table.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "%" in line]
    families = [row.split("|")[1].strip() for row in rows]
    assert families == ["gaussian", "laplace", "uniform", "exp_inf"] * 3 + [
        "fixed σ",
        "DDRS",
        "ANCER",
    ]
    assert all(row.split("|")[2].strip() == "0.25" for row in rows[:12])
    kinds = [row.split("|")[3].strip() for row in rows[:12]]
    assert kinds[:4] == ["converted", "direct", "direct", "direct"]  # l1
    assert kinds[4:8] == ["direct", "direct", "converted", "direct"]  # l2
    assert kinds[8:12] == ["converted", "direct", "direct", "direct"]  # linf
    png = (tmp_path / "smoothings.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_semantic_certify_example_writes_its_table_and_figure(tmp_path):
    args = ["--digits-inputs", "6", "--fashion-inputs", "0", "-n", "200", "--n-grid", "100"]
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "semantic_certify.py"),
            *args,
            "--digits-epochs",
            "2",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    # Every row has the header's number of cells (a renderer drops the cells beyond them).
    widths = {line.count("|") for line in table.splitlines() if line.startswith("|")}
    assert len(widths) == 1, table
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| digits")]
    assert [(r[2].strip(), r[4].strip()) for r in rows] == [
        ("rotation", "parametric"),
        ("rotation", "input"),
        ("scaling", "parametric"),
        ("scaling", "input"),
        ("translation:l2", "parametric=input"),
        ("brightness", "parametric=input"),
    ]
    assert "61 grid points" in rows[1][5] and "41 grid points" in rows[3][5]
    assert all("%" in r[7] for r in rows)
    assert "≥ 10: " in rows[0][7] and "≥ 30: " in rows[0][7]


def test_audit_digits_example_runs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "audit_digits.py"),
            "--inputs",
            "6",
            "-n",
            "1000",
            "--attacks",
            "deepfool",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("HOLDS")
    assert lines[1] == "index radius smallest_adversarial_distance"
    assert 2 <= len(lines) <= 2 + 6
    assert (tmp_path / "report.md").read_text().startswith("# Certificate audit")


@pytest.mark.fashion_mnist
def test_train_certified_example_writes_the_trainer_table(tmp_path):
    args = ["--sigmas", "0.5", "--trainers", "gaussian,macer", "--epochs", "1"]
    args += ["--train-size", "64", "--inputs", "3", "-n", "100", "--n0", "20", "--threads", "1"]
    subprocess.run(
        [sys.executable, str(EXAMPLES / "train_certified.py"), *args, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = (tmp_path / "trainer_table.md").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("| σ | trainer | clean acc. % | cert. acc. r=0.25 %")
    assert [row.split("|")[2].strip() for row in rows[2:]] == ["Gaussian augmentation", "MACER"]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["trainer"] for r in records] == ["gaussian", "macer"]
    for record in records:
        assert 0.0 <= record["clean_ci"][0] <= record["clean"] <= record["clean_ci"][1] <= 1.0
        assert record["certified_1"] <= record["certified_0.25"] <= record["clean"]
        assert record["objective"]["smoothing"] == {"name": "gaussian", "sigma": 0.5}
    assert (tmp_path / "fashion_macer_0.5.pt").is_file()


def test_foolbox_attacks_example_runs():
    out = subprocess.run(
        [
            *(sys.executable, str(EXAMPLES / "foolbox_attacks.py")),
            *("--inputs", "4", "-n", "300", "--attacks", "foolbox_fmn"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "budget foolbox_success predict_wrong"
    rows = [line.split() for line in lines[1:4]]
    assert [row[0] for row in rows] == ["0.25", "0.5", "1"]
    rates = [(float(row[1]), float(row[2])) for row in rows]
    assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for a, b in rates)
    # ℓ2 1 is beyond the digits model's typical adversarial distance, 0.25 within it.
    assert rates[-1][0] > rates[0][0]
    assert lines[4].startswith("HOLDS")
    assert lines[5].startswith("foolbox_fmn: ") and lines[5].endswith("inputs with an adversarial")
    assert len(lines) == 6


def test_fp_counterexample_example_shows_the_false_certificate_and_the_sound_refusal():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "fp_counterexample.py"), "-n", "10000"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("distance ||x1 - x0||_2: 0.448")
    assert lines[1].startswith("float: certify x0 -> class 0")
    assert lines[1].endswith("predict x1 -> class 1; false certificate: yes")
    assert lines[2].startswith("sound: certify x0 -> class 1")
    assert lines[2].endswith("false certificate: no")


def test_weather_certify_example_writes_its_table_and_figure(tmp_path):
    tiny = ["--inputs", "6", "-n", "100", "--n0", "20", "--audit-inputs", "3", "--predict-n"]
    tiny += ["50", "--contrast-inputs", "3", "--epochs", "1", "--train-size", "200"]
    script = str(EXAMPLES / "weather_certify.py")
    families = ("shadow", "fog", "horizon_fog")
    for family in families:
        done = subprocess.run(
            [sys.executable, script, "--family", family, *tiny, "--out-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        result = json.loads((tmp_path / f"{family}.json").read_text())
        trained = result["models"][f"{family}-trained"]
        assert trained["norm"] == family and trained["inputs"] == 6
        audit = trained["audit"]
        # Honest certificates of an exactly composing family: the audit attacked each certified
        # input (at least one PREDICT check within its radius besides the clean one) and found
        # no violation.
        assert audit["inputs"] == 3 and audit["certified_inputs"] >= 1
        assert set(audit["checks"]) == {"semantic_grid", "semantic_random"}
        assert all(count > 0 for count in audit["checks"].values())
        assert audit["min_checks_within_radius"] > 1 and audit["violations"] == 0
        assert result["models"]["noise-trained (shipped)"]["inputs"] == 3
    subprocess.run(
        [sys.executable, script, "--report", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" (")[0] for row in rows] == [f"| {f}" for f in families for _ in (0, 1)]
    assert len({line.count("|") for line in table.splitlines()}) == 1
    assert (tmp_path / "weather.png").read_bytes().startswith(b"\x89PNG")


def test_denoised_table_counts_only_the_inputs_of_every_file(tmp_path):
    def write(name: str, rows: list[tuple[int, int, int, float]]) -> str:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"index": i, "label": label, "prediction": p, "radius": r}) + "\n"
                for i, label, p, r in rows
            )
        )
        return f"{name}={path}"

    # Input 2 is only in the first file, so it is not counted in either row.
    first = write("first", [(0, 1, 1, 0.6), (1, 2, 2, 0.3), (2, 3, 3, 2.0)])
    second = write("second", [(0, 1, -1, 0.0), (1, 2, 1, 0.9)])
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "denoised_table.py"), first, second],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("2 inputs in every file")
    cells = [c.strip() for c in lines[-2].strip("|").split("|")]
    assert cells[0] == "first"
    # Both right: 100 % at r = 0 and 0.25; one of two at r = 0.5; none at r = 1; ACR 0.45.
    assert [c.split(" [")[0] for c in cells[1:5]] == ["100.0", "100.0", "50.0", "0.0"]
    assert cells[5].startswith("0.450 ± ")
    second_cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert [c.split(" [")[0] for c in second_cells[1:5]] == ["0.0", "0.0", "0.0", "0.0"]
    assert second_cells[5] == "0.000 ± 0.000"
