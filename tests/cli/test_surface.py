"""What a newcomer meets on the command line: fast help with defaults, misspelt options,
warnings as one line, summaries without rows that cannot be non-zero."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest
from scipy.stats import norm

from rs_plugin.cli import build_parser, main
from rs_plugin.cli.arguments import _HelpFormatter

COMMANDS = ("certify", "audit", "bench", "plugins")


# Nothing a test does may land in the working tree (e.g. the default results.jsonl).
pytestmark = pytest.mark.usefixtures("in_tmp_path")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


@pytest.mark.parametrize("args", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_answers_without_importing_torch(args):
    script = textwrap.dedent(
        f"""
        import sys
        from rs_plugin.cli import main
        try:
            main({args!r})
        except SystemExit as stop:
            assert stop.code == 0, stop.code
        print("torch" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert "usage: rs-plugin" in done.stdout


def test_every_option_has_help_and_shows_its_default():
    formatter = _HelpFormatter("rs-plugin")
    for name, sub in _subparsers().items():
        assert sub.description, name
        assert "``" not in sub.description, name  # no reStructuredText markup in --help
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            if action.default not in (None, False, []):
                shown = formatter._get_help_string(action) % {"default": action.default}
                assert "default" in shown.lower(), f"{name} {action.option_strings}"


def test_every_default_a_help_text_states_is_the_parser_default():
    formatter = _HelpFormatter("rs-plugin")
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.default in (None, False, [], argparse.SUPPRESS):
                continue
            shown = formatter._get_help_string(action) % {"default": action.default}
            values = action.default if isinstance(action.default, list) else [action.default]
            for value in values:
                assert str(value) in shown, f"{name} {action.option_strings}: {shown}"
    # The audit loads only a model named on the command line (never the file's own).
    audit = _subparsers()["audit"]
    (model,) = [a for a in audit._actions if "--model" in a.option_strings]
    assert model.help is not None and "default: demo;" in model.help
    assert "certificate file's" not in model.help.split(";")[0]


@pytest.mark.parametrize(
    ("args", "usage", "hint"),
    [
        (["certify", "--sigmaa", "0.3"], "usage: rs-plugin certify", "did you mean --sigma?"),
        (["audit", "--atacks", "pgd"], "usage: rs-plugin audit", "did you mean --attacks?"),
        (["bench", "--repeets", "2"], "usage: rs-plugin bench", "did you mean --repeats?"),
    ],
)
def test_a_misspelt_option_gets_the_sub_command_usage_and_a_suggestion(capsys, args, usage, hint):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert usage in err and hint in err and "unrecognized arguments" in err


@pytest.mark.filterwarnings("default::rs_plugin.RSWarning")
def test_warnings_are_printed_as_one_line_naming_the_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "probabilities_model.py").write_text(
        textwrap.dedent(
            """
            import torch
            from rs_plugin.data import load_demo_model

            def make():
                return torch.nn.Sequential(load_demo_model(), torch.nn.Softmax(dim=1))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["certify", "--model", "probabilities_model:make", "--limit", "2", "-n", "100"]
    code = main([*args, "--n0", "10", "--out", str(tmp_path / "r.jsonl")])
    assert code == 0
    err = capsys.readouterr().err
    warning_lines = [line for line in err.splitlines() if "warning" in line]
    assert warning_lines, err
    assert warning_lines[0].startswith("rs-plugin certify: warning: the model seems to output")
    assert ".py:" not in err  # no Python source location or source line


def _summary_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("certified accuracy")]


def test_summary_leaves_out_radii_above_the_sampling_cap_and_states_the_cap(tmp_path, capsys):
    assert main(["certify", "--limit", "3", "-n", "200", "--n0", "20", "--out", "r.jsonl"]) == 0
    out = capsys.readouterr().out
    cap = 0.25 * norm.ppf(0.001 ** (1 / 200))
    shown = [float(row.split(">=")[1].split()[0]) for row in _summary_rows(out)]
    assert shown == [r for r in (0, 0.125, 0.25, 0.5, 0.75, 1.0) if r <= cap]
    (cap_line,) = [line for line in out.splitlines() if "(cap)" in line]
    assert float(cap_line.split()[-1]) == pytest.approx(cap, rel=1e-3)


def test_rotation_summary_stops_at_the_certified_range(tmp_path, capsys):
    args = ["certify", "--smoothing", "rotation", "--smoothing-param", "degrees=15"]
    args += ["--semantics", "input"]
    args += ["--smoothing-param", "input_range=30", "--smoothing-param", "grid_step=10"]
    args += ["--limit", "1", "-n", "100", "--n0", "10", "--out", "r.jsonl"]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = _summary_rows(out)
    assert rows and all(row.split(">=")[1].split()[0].endswith("°") for row in rows)
    thresholds = [float(row.split(">=")[1].split()[0].rstrip("°")) for row in rows]
    assert thresholds and max(thresholds) <= 30
    assert "radius >= 45" not in out and "radius >= 60" not in out
    (cap_line,) = [line for line in out.splitlines() if "(cap)" in line]
    assert float(cap_line.split()[-1]) == 30


def test_sequential_decision_summary_says_how_many_were_decided_certified(tmp_path, capsys):
    args = ["certify", "--certifier", "sequential", "--radius", "0.25", "-n", "4000"]
    assert main([*args, "--limit", "4", "--n0", "20", "--out", "r.jsonl"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("decided certified at l2")]
    assert "radius 0.25" in line and line.rstrip().endswith("%")
    assert "estimation samples per input" in out


def test_audit_into_a_folder_certified_with_other_settings_says_what_to_change(tmp_path, capsys):
    out = tmp_path / "audit"
    common = ["--limit", "2", "-n", "100", "--n0", "10"]
    assert main(["certify", *common, "--out", str(out / "certificates.jsonl")]) == 0
    before = (out / "certificates.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["audit", *common, "--sigma", "0.5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out: expected a folder whose certificates.jsonl was certified with the same" in err
    assert "sigma" in err and "--resume" not in err
    assert (out / "certificates.jsonl").read_bytes() == before
