"""Bad inputs and faults at the command line: one clear error (parameter, accepted, received)
before anything is written, data fingerprinted by content, certificate files that are data only,
models that fail in every way, a closed stdout. Fuzzed with hypothesis where the space is large.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs_plugin.cli import main
from rs_plugin.cli.flags import FLAGS

FAST = ["-n", "100", "--n0", "10"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "rs-plugin"
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_FRESH = itertools.count()


# Nothing a test does may land in the working tree (e.g. the default results.jsonl).
pytestmark = pytest.mark.usefixtures("in_tmp_path")


def _refused(capsys, argv: list[str], parameter: str, out: Path | None = None) -> str:
    """Run the command; it must exit 2 naming ``parameter`` by its flag, with no traceback or
    output file."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    flag = FLAGS.get(parameter, parameter)
    assert captured.err.startswith(f"rs-plugin {argv[0]}: error: {flag}:"), captured.err
    assert "Traceback" not in captured.err
    if out is not None:
        assert not out.exists()
    return captured.err


# --- options -------------------------------------------------------------------------------

_BAD_OPTIONS = st.one_of(
    # float32 can hold noise only up to σ = 3.4e38 / 1e6 (rs_plugin._validation.NOISE_TAIL).
    st.tuples(st.just("--sigma"), st.floats().filter(lambda v: not 0 < v < 1e33)),
    st.tuples(st.just("--alpha"), st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0))),
    st.tuples(st.sampled_from(["--n0", "-n", "--batch-size", "--limit"]), st.integers(max_value=0)),
    st.tuples(
        st.just("--seed"), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64))
    ),
    st.tuples(
        st.sampled_from(["--smoothing", "--certifier", "--precision", "--device"]),
        st.text(alphabet="abcxyz_-:0123456789", min_size=1, max_size=12).filter(
            lambda t: (
                t not in {"cpu", "float32", "float16", "bfloat16", "cohen", "grid", "ddrs", "ancer"}
                and not t.startswith("-")
            )
        ),
    ),
)


@FUZZ
@given(option=_BAD_OPTIONS)
def test_any_bad_option_is_one_error_naming_it_before_writing(tmp_path, capsys, option):
    flag, value = option
    out = tmp_path / f"sub{next(_FRESH)}" / "r.jsonl"
    argv = ["certify", "--limit", "2", *FAST, f"{flag}={value}", "--out", str(out)]
    err = _refused(capsys, argv, flag, out)
    assert not out.parent.exists()
    assert "; received " in err


@pytest.mark.parametrize(
    ("args", "parameter", "says"),
    [
        (["--sigma", "1e300"], "--sigma", "noise samples stay finite in torch.float32"),
        (["--sigma", "3e38"], "--sigma", "noise samples stay finite"),
        (["--seed", str(2**64)], "--seed", r"an integer in \[0, 18446744073709551615\]"),
    ],
)
def test_values_that_would_alias_or_overflow_are_refused(tmp_path, capsys, args, parameter, says):
    out = tmp_path / "r.jsonl"
    err = _refused(capsys, ["certify", "--limit", "2", *FAST, *args, "--out", str(out)], parameter)
    assert re.search(says, err)
    assert not out.exists()


# --- data --------------------------------------------------------------------------------


def _npz(path: Path, n: int = 4, value: float = 0.5) -> Path:
    np.savez(path, x=np.full((n, 1, 8, 8), value, np.float32), y=np.arange(n) % 10)
    return path


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "0 bytes"),
        (b"not a zip archive", "not a zip archive"),
        ("pickled", "Object arrays cannot be loaded"),
        ("empty", "at least one input"),
        ("strings", "numeric array"),
        ("complex", "of real values"),  # its imaginary part would be dropped
    ],
)
def test_a_bad_npz_is_one_error(tmp_path, capsys, content, says):
    path = tmp_path / "data.npz"
    if content == "pickled":
        np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    elif content == "empty":
        np.savez(path, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    elif content == "strings":
        np.savez(path, x=np.array(["a"]), y=np.array([0]))
    elif content == "complex":
        np.savez(path, x=np.full((2, 1, 8, 8), 0.5 + 0.5j), y=np.array([0, 1]))
    else:
        path.write_bytes(content)
    out = tmp_path / "r.jsonl"
    err = _refused(capsys, ["certify", "--data", str(path), *FAST, "--out", str(out)], "data", out)
    assert says in err


def test_an_empty_idx_dataset_is_one_error(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    )
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (0).to_bytes(4, "big"))
    err = _refused(capsys, ["certify", "--data", str(folder), *FAST], "data")
    assert "at least one image" in err


@FUZZ
@given(blob=st.binary(max_size=300), gz=st.booleans())
def test_any_bytes_as_a_dataset_are_read_or_refused_with_one_error(tmp_path, blob, gz):
    from rs_plugin import RSValueError
    from rs_plugin.data import load_dataset

    folder = tmp_path / f"d{next(_FRESH)}"
    folder.mkdir()
    (folder / "blob.npz").write_bytes(blob)
    suffix = ".gz" if gz else ""
    (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(blob)
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(blob[:12])
    for spec in (folder / "blob.npz", folder):
        try:
            load_dataset(str(spec))
        except RSValueError as error:
            assert error.parameter == "data"


def test_new_content_under_an_old_path_is_refused_and_a_path_by_any_name_accepted(tmp_path, capsys):
    data = _npz(tmp_path / "data.npz")
    out = tmp_path / "r.jsonl"
    assert main(["certify", "--data", "data.npz", "--limit", "2", *FAST, "--out", str(out)]) == 0
    # The same file by its absolute path: the same data, so the run resumes.
    argv = ["certify", "--data", str(data.resolve()), "--limit", "3", *FAST, "--out", str(out)]
    assert main([*argv, "--resume"]) == 0
    assert "1 certified now, 2 resumed" in capsys.readouterr().out
    before = out.read_bytes()
    _npz(data, value=0.25)  # new content under the old name
    err = _refused(
        capsys,
        ["certify", "--data", "data.npz", "--limit", "4", *FAST, "--out", str(out), "--resume"],
        "--resume",
    )
    assert "data_sha256: stored" in err
    assert out.read_bytes() == before


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path, capsys):
    from rs_plugin.cli.store import ResultStore

    out = tmp_path / "r.jsonl"
    with ResultStore(out, {"model": "x"}, resume=False):
        err = _refused(capsys, ["certify", "--limit", "1", *FAST, "--out", str(out)], "--out")
    assert "locked by another process" in err
    assert out.read_bytes() == b""


def test_out_a_folder_is_refused(tmp_path, capsys):
    _refused(capsys, ["certify", "--limit", "1", *FAST, "--out", str(tmp_path)], "--out")


@pytest.mark.parametrize("where", ["file", "folder"])
def test_an_out_name_longer_than_the_file_system_allows_is_refused_before_loading(
    tmp_path, capsys, where
):
    # Refused with the file system's own limit (NAME_MAX) before the model and data load; an
    # audit's folder likewise, before the first attack.
    long = "r" * 300
    if where == "file":
        out = tmp_path / f"{long}.jsonl"
        argv = ["certify", "--limit", "1", *FAST, "--out", str(out)]
    else:
        out = tmp_path / long
        argv = ["audit", "--limit", "1", *FAST, "--out", str(out)]
    err = _refused(capsys, argv, "--out")
    assert "every name has at most" in err and "a name of" in err, err
    assert sorted(tmp_path.iterdir()) == []


def test_out_inside_a_file_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "plain").write_text("a file, not a folder")
    out = tmp_path / "plain" / "r.jsonl"
    err = _refused(capsys, ["certify", "--limit", "1", *FAST, "--out", str(out)], "--out")
    assert "a folder this process may create and write" in err


# --- models --------------------------------------------------------------------------------

_MODELS = """
import torch
from torch import nn
from rs_plugin.data import load_demo_model

class Reshaped(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.model, self.how = load_demo_model(), how
    def forward(self, x):
        out = self.model(x)
        return {"flat": out[:, 0], "transposed": out.T, "one": out[:, :1]}[self.how]

def flat(): return Reshaped("flat").eval()
def transposed(): return Reshaped("transposed").eval()
def one_class(): return Reshaped("one").eval()
def float64(): return load_demo_model().double()
def needs_arguments(width): return load_demo_model()
def raises(): raise FileNotFoundError("weights.pt is missing")
def not_a_module(): return 42
"""


@pytest.fixture
def models(tmp_path):
    """A factory module in the working folder, under a name no other test imports."""
    name = f"user_models_{next(_FRESH)}"
    (tmp_path / f"{name}.py").write_text(_MODELS)
    (tmp_path / f"{name}_syntax.py").write_text("def make(:\n    pass\n")
    (tmp_path / f"{name}_dep.py").write_text("import a_dependency_that_is_missing\n")
    return name


@pytest.mark.parametrize(
    ("factory", "parameter", "says"),
    [
        ("{m}:flat", "--model", r"returned \(2,\) for 2 inputs"),
        ("{m}:transposed", "--model", r"returned \(10, 2\) for 2 inputs"),
        ("{m}:one_class", "--model", "at least 2 classes"),
        ("{m}:needs_arguments", "model", "missing a required argument: 'width'"),
        ("{m}:raises", "model", "raised FileNotFoundError: weights.pt is missing"),
        ("{m}:not_a_module", "model", "-> int"),
        ("{m}:absent", "model", "no 'absent'"),
        ("{m}_syntax:make", "model", r"SyntaxError: .*_syntax.py, line 1"),
        ("{m}_dep:make", "model", "No module named 'a_dependency_that_is_missing'"),
        ("no_such_module_here:make", "model", "no module named 'no_such_module_here'"),
    ],
)
def test_a_model_that_fails_says_what_failed(tmp_path, capsys, models, factory, parameter, says):
    out = tmp_path / "r.jsonl"
    spec = factory.format(m=models)
    err = _refused(
        capsys,
        ["certify", "--model", spec, "--limit", "2", *FAST, "--out", str(out)],
        parameter,
        out,
    )
    assert re.search(says, err), err


def test_a_model_in_float64_is_certified(tmp_path, models):
    out = tmp_path / "r.jsonl"
    assert (
        main(["certify", "--model", f"{models}:float64", "--limit", "2", *FAST, "--out", str(out)])
        == 0
    )
    assert len(out.read_bytes().splitlines()) == 2


@pytest.mark.slow
def test_console_script_loads_a_model_from_the_working_folder_and_survives_a_closed_stdout(
    tmp_path, models
):
    """``rs-plugin certify --model mymodel:make`` from the folder holding mymodel.py, its output
    piped into a reader that has already gone (``| head``): exit 141, every record written."""
    (tmp_path / "mymodel.py").write_text(
        "from rs_plugin.data import load_demo_model\n\ndef make():\n    return load_demo_model()\n"
    )
    out = tmp_path / "r.jsonl"
    process = subprocess.Popen(
        [
            str(CONSOLE_SCRIPT),
            "certify",
            "--model",
            "mymodel:make",
            "--limit",
            "3",
            *FAST,
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line is printed
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "stdout was closed" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert records[0]["model"] == "mymodel:make"


# --- certificate files are data ------------------------------------------------------------


def _certificates(tmp_path: Path, records: list[dict] | list[str]) -> Path:
    path = tmp_path / f"certs{next(_FRESH)}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _cert(index: int = 0, **fields) -> dict:
    return {"index": index, "prediction": 1, "radius": 0.3, "alpha": 0.001, **fields}


def test_a_certificate_file_never_chooses_code_to_run(tmp_path, capsys):
    """A file naming a factory (here one in the working folder that would leave a mark, and
    os:getpid) is refused unless the user names the model; nothing named is imported."""
    (tmp_path / "planted.py").write_text(
        "from pathlib import Path\nPath('IMPORTED').write_text('x')\ndef make():\n"
        "    Path('CALLED').write_text('x')\n"
    )
    for model in ("planted:make", "os:getpid", str(tmp_path / "model.pt")):
        path = _certificates(tmp_path, [_cert(model=model)])
        err = _refused(capsys, ["audit", "--certificates", str(path), "--out", "o"], "--model")
        assert f"pass --model {model}" in err
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "CALLED").exists()
    assert "planted" not in sys.modules


def test_every_record_of_a_certificate_file_is_checked(tmp_path, capsys):
    cases: list[tuple[list, str]] = [
        ([], "with at least one record"),
        ([_cert(radius="0.5")], "a radius: a finite number >= 0"),
        ([_cert(radius=None, prediction=2)], "a radius"),
        ([_cert(prediction=-2)], "a prediction"),
        ([_cert(alpha=2)], "an alpha"),
        (
            [_cert(0, model_sha256="aa"), _cert(1, model_sha256="bb")],
            "lines 1 and 2 differ in model_sha256: 'aa' then 'bb'",
        ),
        ([_cert(0, n=100), _cert(1, n=100), _cert(2, n=200)], "lines 1 and 3 differ in n"),
        ([_cert(0), "not json"], "line 2"),
        ([_cert(0), _cert(0)], "index 0 on lines 1 and 2"),
    ]
    for records, says in cases:
        path = _certificates(tmp_path, records)
        err = _refused(
            capsys, ["audit", "--certificates", str(path), "--out", "o"], "--certificates"
        )
        assert says in err, (records, err)
    assert not (tmp_path / "o").exists()


def test_audit_checks_the_model_and_data_of_the_certificates(tmp_path, capsys):
    path = _certificates(tmp_path, [_cert(model="demo", model_sha256="0" * 16)])
    err = _refused(capsys, ["audit", "--certificates", str(path), "--out", "o"], "--model")
    assert "sha256 0000000000000000" in err
    path = _certificates(tmp_path, [_cert(model="demo", data_sha256="0" * 16)])
    err = _refused(
        capsys, ["audit", "--certificates", str(path), "--data", "digits", "--out", "o"], "--data"
    )
    assert "the data the certificates were computed on" in err


_BAD_RECORD = st.fixed_dictionaries(
    {"index": st.integers(0, 5)},
    optional={
        "prediction": st.one_of(st.integers(max_value=-2), st.text(max_size=3), st.none()),
        "radius": st.one_of(st.text(max_size=3), st.just(float("nan")), st.floats(max_value=-1e-9)),
        "alpha": st.one_of(st.floats(min_value=1.0), st.floats(max_value=0.0), st.booleans()),
    },
)


@pytest.mark.slow
@FUZZ
@given(records=st.lists(_BAD_RECORD, min_size=1, max_size=4, unique_by=lambda r: r["index"]))
def test_any_malformed_certificate_file_is_one_error(tmp_path, capsys, records):
    path = _certificates(tmp_path, [json.dumps(r) for r in records])
    _refused(capsys, ["audit", "--certificates", str(path), "--out", "o"], "--certificates")
