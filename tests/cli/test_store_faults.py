"""Faults and fuzz for the result store: a cut at every byte, CRLF files, garbage after the last
newline, random interleavings of appends, crashes and resumes, and concurrent writers.

Property-based (hypothesis) with a fixed budget and derandomised examples, so CI is reproducible.
The properties throughout: every record that was whole on disk is kept, a refused resume leaves
the file byte for byte as it was, and nothing but :class:`RSValueError` reaches the user.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs_plugin import RSValueError
from rs_plugin.cli.store import ResultStore, read_json_lines

CONFIG = {"model": "demo", "n": 100, "alpha": 0.001, "seed": 0, "smoothing": {"sigma": 0.25}}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _record(index: int) -> dict:
    return {"index": index, "prediction": index % 10, "radius": 0.125 * index, "note": "é"}


def _line(index: int, newline: bytes = b"\n", config: dict = CONFIG) -> bytes:
    return json.dumps({**_record(index), **config}).encode() + newline


def _file(indices: list[int], newline: bytes = b"\n") -> bytes:
    return b"".join(_line(i, newline) for i in indices)


_FRESH = itertools.count()


def _fresh(folder):
    """A new file name per hypothesis example (the tmp_path fixture is shared by examples)."""
    return folder / f"r{next(_FRESH)}.jsonl"


def _is_whole(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_cut_at_every_byte_keeps_every_whole_record_and_resumes(tmp_path, newline):
    """Whatever byte a crash cuts the file at, resuming keeps exactly the records whose JSON is
    whole, drops only a record cut short, and appending the rest rebuilds the file exactly."""
    indices = [3, 0, 7]
    data = _file(indices, newline)
    first_line = len(_line(3, newline))
    path = tmp_path / "r.jsonl"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        whole = [json.loads(line)["index"] for line in data[:cut].split(b"\n") if _is_whole(line)]
        # Until its first line is whole, the file does not show its line ending; from then on
        # every line the store adds or completes ends like the others.
        same = (lambda b: b) if cut >= first_line else (lambda b: b.replace(b"\r\n", b"\n"))
        with ResultStore(path, CONFIG, resume=True) as store:
            assert list(store.records) == whole, cut
            assert same(data).startswith(same(path.read_bytes())), cut  # only a cut record gone
            for index in indices:
                if index not in store.records:
                    store.append(_record(index))
        assert same(path.read_bytes()) == same(data), cut


def test_a_whole_last_record_without_its_newline_is_checked_like_the_others(tmp_path):
    path = tmp_path / "r.jsonl"
    other = _line(0) + _line(1, config={**CONFIG, "seed": 1}).rstrip(b"\n")
    path.write_bytes(other)
    with pytest.raises(RSValueError, match=r"^--resume: .*line 2 differs in seed: stored 1"):
        ResultStore(path, CONFIG, resume=True).open()
    assert path.read_bytes() == other


def test_a_model_name_that_now_computes_something_else_is_named_as_such(tmp_path):
    path = tmp_path / "r.jsonl"
    stored = {**CONFIG, "model_sha256": "64332a1165fb0158"}
    path.write_bytes(_line(0, config=stored))
    newer = {**CONFIG, "model_sha256": "b19e7a9dc21f80fd"}
    with pytest.raises(RSValueError, match="same model name now computes something else"):
        ResultStore(path, newer, resume=True).open()
    other_name = {**newer, "model": "other.ts"}
    with pytest.raises(RSValueError, match="differs in model: ") as refused:
        ResultStore(path, other_name, resume=True).open()
    assert "now computes" not in str(refused.value)
    assert path.read_bytes() == _line(0, config=stored)


@pytest.mark.parametrize(
    "tail",
    [b"inputs 20, accuracy 0.9", b"[1, 2, 3]", b'{"index": -1}', b'{"radius": 2}', b"\xff\xfe"],
)
def test_a_last_line_that_is_not_a_record_is_refused_and_untouched(tmp_path, tail):
    path = tmp_path / "r.jsonl"
    data = _file([0, 1]) + tail
    path.write_bytes(data)
    with pytest.raises(RSValueError, match="^--out: .*after the last newline"):
        ResultStore(path, CONFIG, resume=True).open()
    assert path.read_bytes() == data


def test_a_one_line_summary_without_newline_is_never_wiped(tmp_path):
    path = tmp_path / "summary.txt"
    path.write_bytes(b"certified accuracy 0.83 at radius 0.5")
    for resume in (False, True):
        with pytest.raises(RSValueError, match="^--out: "):
            ResultStore(path, CONFIG, resume=resume).open()
    assert path.read_bytes() == b"certified accuracy 0.83 at radius 0.5"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"\xff\xfe not utf-8", "line 2: byte 0"),
        (b"[1, 2]", "integer 'index'"),
        (b'{"index": "3"}', "integer 'index'"),
        (b'{"index": true}', "integer 'index'"),
        (b"{not json}", "line 2: Expecting property name"),
    ],
)
def test_a_line_that_is_not_a_record_is_refused_naming_it(tmp_path, line, says):
    path = tmp_path / "r.jsonl"
    data = _line(0) + line + b"\n" + _line(1)
    path.write_bytes(data)
    with pytest.raises(RSValueError, match=f"^--out: .*{says}"):
        ResultStore(path, CONFIG, resume=True).open()
    assert path.read_bytes() == data


def test_a_duplicated_index_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    data = _line(0) + _line(1) + _line(0)
    path.write_bytes(data)
    with pytest.raises(RSValueError, match="index 0 on lines 1 and 3"):
        ResultStore(path, CONFIG, resume=True).open()
    assert path.read_bytes() == data


def test_a_folder_or_a_read_only_out_is_refused(tmp_path):
    with pytest.raises(RSValueError, match="^--out: expected a file path, not a folder"):
        ResultStore(tmp_path, CONFIG, resume=False).open()
    # A path below a regular file cannot be created, whoever runs the tests (root included).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RSValueError, match="^--out: expected a file this process may create"):
        ResultStore(blocker / "r.jsonl", CONFIG, resume=False).open()


@FUZZ
@given(tail=st.binary(min_size=1, max_size=80))
def test_any_bytes_after_the_last_newline_keep_the_records_or_leave_the_file(tmp_path, tail):
    path = _fresh(tmp_path)
    data = _file([0, 1]) + tail
    path.write_bytes(data)
    try:
        store = ResultStore(path, CONFIG, resume=True).open()
    except RSValueError:
        assert path.read_bytes() == data
        return
    with store:
        assert {0, 1} <= set(store.records)
        store.append(_record(9))
    assert 9 in {r["index"] for _, r in read_json_lines(path, "--out").records}
    assert path.read_bytes().startswith(_file([0, 1]))


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_file_is_read_or_refused_with_one_error_type(tmp_path, data):
    path = _fresh(tmp_path)
    path.write_bytes(data)
    try:
        read_json_lines(path, "--certificates")
    except RSValueError as error:
        assert error.parameter == "--certificates"
    assert path.read_bytes() == data


# One step of a run's life: append new indices, crash (cut the last write short at some byte),
# or stop and resume.
_STEP = st.one_of(
    st.tuples(st.just("append"), st.lists(st.integers(0, 40), max_size=4)),
    st.tuples(st.just("crash"), st.floats(0.0, 1.0)),
    st.tuples(st.just("resume"), st.booleans()),
)


@FUZZ
@given(steps=st.lists(_STEP, max_size=12), crlf=st.booleans())
def test_random_appends_crashes_and_resumes_lose_no_finished_record(tmp_path, steps, crlf):
    """A model of the file (the records whose write finished) against the store, through
    random interleavings of appends, writes cut short by a crash, and resumes."""
    path = _fresh(tmp_path)
    if crlf:
        path.write_bytes(_file([100], b"\r\n"))
    finished = {100: True} if crlf else {}
    store = ResultStore(path, CONFIG, resume=True).open()
    try:
        for kind, value in steps:
            if kind == "append":
                for index in value:
                    if index not in finished:
                        store.append(_record(index))
                        finished[index] = True
            elif kind == "crash":
                store.close()
                fresh = max(finished, default=0) + 1
                partial = _line(fresh)[: int(value * (len(_line(fresh)) - 1))]
                with open(path, "ab") as handle:
                    handle.write(partial)  # the write in flight when the process died
                if _is_whole(partial):  # only its newline was lost: a whole record, kept
                    finished[fresh] = True
                store = ResultStore(path, CONFIG, resume=True).open()
            else:
                store.close()
                store = ResultStore(path, CONFIG, resume=True).open()
            assert set(store.records) == set(finished)
    finally:
        store.close()
    on_disk = [r["index"] for _, r in read_json_lines(path, "--out").records]
    assert sorted(on_disk) == sorted(finished)


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, CONFIG, resume=False) as first:
        first.append(_record(0))
        for resume in (False, True):
            with pytest.raises(RSValueError, match="^--out: .*locked by another process"):
                ResultStore(path, CONFIG, resume=resume).open()
        first.append(_record(1))
    with ResultStore(path, CONFIG, resume=True) as second:
        assert list(second.records) == [0, 1]


_WRITER = """
import sys, time
from rs_plugin import RSValueError
from rs_plugin.cli.store import ResultStore
config = {"model": "demo", "n": 100, "alpha": 0.001, "seed": 0, "smoothing": {"sigma": 0.25}}
first = int(sys.argv[2])
try:
    store = ResultStore(sys.argv[1], config, resume=True).open()
except RSValueError as error:
    print("refused", error.parameter)
    sys.exit(0)
try:
    print("writing", flush=True)
    for index in range(first, first + 20):
        if index not in store.records:
            store.append({"index": index, "prediction": 0, "radius": 0.0})
        time.sleep(0.01)
finally:
    store.close()
"""


def test_concurrent_writer_processes_never_duplicate_or_interleave(tmp_path):
    """Four processes race for one file: whoever holds the lock writes, the others are refused
    with a clear error, and the file holds each index once, in whole lines."""
    path = tmp_path / "r.jsonl"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(10 * k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert any("writing" in out for out in outputs)
    records = [r for _, r in read_json_lines(path, "--out").records]
    indices = [r["index"] for r in records]
    assert len(indices) == len(set(indices))
    refused = sum("refused --out" in out for out in outputs)
    assert refused + sum("writing" in out for out in outputs) == 4
    started = time.monotonic()
    with ResultStore(path, CONFIG, resume=True) as store:
        assert set(store.records) == set(indices)
    assert time.monotonic() - started < 60
