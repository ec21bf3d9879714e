"""The published per-image log of examples/reproduce_fashion.py: read as data, checked against
the test set's labels, and turned into the published figures on exactly our images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_plugin import RSValueError

_SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "reproduce_fashion.py"
_SPEC = importlib.util.spec_from_file_location("reproduce_fashion", _SCRIPT)
assert _SPEC is not None and _SPEC.loader is not None
reproduce = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(reproduce)

LABELS = torch.tensor([9, 2, 1, 1, 6, 1])
HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


def _log(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "noise_0.25.tsv"
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_the_published_figures_are_computed_on_exactly_our_images(tmp_path):
    rows = [
        "0\t9\t9\t0.600\t1\t0:00:00.69",
        "1\t2\t2\t0.300\t1\t0:00:00.70",
        "2\t1\t3\t0.900\t0\t0:00:00.70",  # wrong: counts 0 whatever its radius
        "3\t1\t1\t0.800\t1\t0:00:00.70",
        "4\t6\t-1\t0.000\t0\t0:00:00.70",  # abstained
    ]
    log = reproduce.read_published_log(_log(tmp_path, rows), LABELS)
    assert log == {0: (0.6, True), 1: (0.3, True), 2: (0.9, False), 3: (0.8, True), 4: (0.0, False)}
    cohen = [{"index": i} for i in (0, 1, 2, 3)]
    # Our certified-and-correct flags; image 5 is not in the log.
    anytime = {
        "0.5": {3: True, 2: True, 1: False, 0: False},
        "0.75": {0: False, 1: False, 2: False, 3: True, 4: False, 5: True},
    }
    same = reproduce.published_on_our_images(log, cohen, anytime)
    assert same["acr"]["value"] == pytest.approx((0.6 + 0.3 + 0.0 + 0.8) / 4)
    assert same["acr"]["images"] == 4 and same["acr"]["missing"] == 0
    low, high = same["acr"]["ci95"]
    assert low < same["acr"]["value"] < high
    # Published at 0.5: images 0 and 3; ours: 2 and 3. Discordant: 2 (ours), 0 (theirs).
    assert same["certified"]["0.5"] == {
        "value": 0.5, "images": 4, "missing": 0, "only_ours": 1, "only_published": 1,
        "mcnemar_p": 1.0,
    }  # fmt: skip
    assert same["certified"]["0.75"] == {
        "value": 0.2, "images": 5, "missing": 1, "only_ours": 0, "only_published": 0,
        "mcnemar_p": 1.0,
    }  # fmt: skip


@pytest.mark.parametrize(("only_ours", "only_published"), [(0, 0), (0, 5), (9, 11), (25, 4)])
def test_the_mcnemar_p_value_is_statsmodels_exact_one(only_ours, only_published):
    from statsmodels.stats.contingency_tables import mcnemar

    table = [[0, only_ours], [only_published, 0]]
    expected = mcnemar(table, exact=True).pvalue
    assert reproduce._mcnemar(only_ours, only_published) == pytest.approx(expected, rel=1e-12)
    assert reproduce._mcnemar(only_published, only_ours) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("rows", "header", "said"),
    [
        (["0\t9\t9\t0.6\t1"], "idx\tlabel\tpredict\tcorrect\n", "no column radius"),
        (["0\t2\t2\t0.6\t1"], HEADER, "label 2 for test image 0, whose label is 9"),
        (["0\t9\t9\t0.6\t1", "0\t9\t9\t0.6\t1"], HEADER, "line 3: index 0 out of"),
        (["6\t1\t1\t0.6\t1"], HEADER, "index 6 out of range"),
        (["0\t9\t9\t-0.1\t1"], HEADER, "radius -0.1"),
        (["0\t9\t9\tnan\t1"], HEADER, "radius nan"),
        (["0\t9\t9\t0.6\t2"], HEADER, "correct 2"),
        (["0\t9\t9\tbig\t1"], HEADER, "line 2: could not convert"),
        (["0\t9"], HEADER, "line 2:"),
    ],
)
def test_a_log_that_is_not_of_this_test_set_is_refused_naming_the_line(
    tmp_path, rows, header, said
):
    with pytest.raises(RSValueError, match=r"^--published-log: expected .*idx, label") as refused:
        reproduce.read_published_log(_log(tmp_path, rows, header), LABELS)
    assert said in str(refused.value)


def test_a_missing_log_is_refused(tmp_path):
    with pytest.raises(RSValueError, match="no such file"):
        reproduce.read_published_log(tmp_path / "none.tsv", LABELS)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.text(alphabet="0123456789.-\tnaefx \r", max_size=24), max_size=6))
def test_any_text_is_read_or_refused_with_one_clear_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("log") / "log.tsv"
    path.write_text(HEADER + "\n".join(lines), encoding="utf-8")
    try:
        log = reproduce.read_published_log(path, LABELS)
    except RSValueError as error:
        assert str(error).startswith("--published-log: expected")
    else:
        for index, (radius, correct) in log.items():
            assert 0 <= index < len(LABELS) and radius >= 0.0 and isinstance(correct, bool)


def test_a_partial_pass_is_summarised_on_its_complete_prefix_of_images():
    # A pass stopped in its third slice: images 0–99 done, of 100–149 only the two given up
    # early. The table counts images 0–99 only (the two would bias it towards "not certified").
    records = [{"index": i} for i in (*range(99, -1, -1), 137, 104)]
    assert [r["index"] for r in reproduce._prefix(records)] == list(range(100))
    assert reproduce._prefix([{"index": 1}]) == []
