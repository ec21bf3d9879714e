"""The append-only JSON Lines result store: flushing, refusing to overwrite, resuming safely."""

from __future__ import annotations

import json
import sys

import pytest

from rs_plugin import RSValueError, RSWarning
from rs_plugin.cli.store import ResultStore

CONFIG = {"model": "demo", "n0": 10, "n": 100, "alpha": 0.001, "seed": 0, "smoothing": {"s": 1}}


def _record(index: int) -> dict:
    return {"index": index, "prediction": index % 10, "radius": 0.25 * index}


def _line(index: int, config: dict = CONFIG) -> str:
    return json.dumps({**_record(index), **config}) + "\n"


def test_append_is_flushed_and_visible_to_another_reader(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, CONFIG, resume=False).open()
    try:
        store.append(_record(0))
        # Read through a separate handle while the store is still open.
        with open(path, encoding="utf-8") as reader:
            lines = reader.read().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0]) == {**_record(0), **CONFIG}
        store.append(_record(1))
        assert path.read_text(encoding="utf-8").splitlines()[1] == _line(1).rstrip("\n")
        assert store.done() == {0, 1}
    finally:
        store.close()
    assert path.read_text(encoding="utf-8") == _line(0) + _line(1)


def test_context_manager_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "r.jsonl"
    with ResultStore(path, CONFIG, resume=False) as store:
        assert store.done() == set()
        store.append(_record(3))
    assert path.read_text(encoding="utf-8") == _line(3)


def test_an_existing_empty_file_may_be_used_without_resume(tmp_path):
    path = tmp_path / "r.jsonl"
    path.touch()
    with ResultStore(path, CONFIG, resume=False) as store:
        store.append(_record(0))
    assert path.read_text(encoding="utf-8") == _line(0)


def test_existing_file_without_resume_is_refused_and_untouched(tmp_path):
    path = tmp_path / "r.jsonl"
    original = (_line(0) + _line(1) + '{"index": 2, "pre').encode()
    path.write_bytes(original)
    store = ResultStore(path, CONFIG, resume=False)
    with pytest.raises(RSValueError, match="--out") as info:
        store.open()
    assert info.value.parameter == "--out"
    assert path.read_bytes() == original
    with pytest.raises(RuntimeError):
        store.append(_record(5))
    assert path.read_bytes() == original


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"n": 1000}, {"alpha": 0.01}, {"model": "other"}, {"smoothing": {"s": 2}}],
)
def test_resume_with_a_different_config_is_refused_and_untouched(tmp_path, change):
    path = tmp_path / "r.jsonl"
    original = (_line(0) + _line(1)).encode()
    path.write_bytes(original)
    with pytest.raises(RSValueError, match="--resume") as info:
        ResultStore(path, {**CONFIG, **change}, resume=True).open()
    assert info.value.parameter == "--resume"
    assert path.read_bytes() == original


def test_resume_with_an_extra_config_key_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    original = _line(0).encode()
    path.write_bytes(original)
    with pytest.raises(RSValueError, match="--resume"):
        ResultStore(path, {**CONFIG, "batch": 7}, resume=True).open()
    assert path.read_bytes() == original


def test_resume_keeps_whole_records_and_drops_a_truncated_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    whole = _line(0) + _line(1) + _line(2)
    partial = _line(3)[:25]
    assert not partial.endswith("\n")
    path.write_text(whole + partial, encoding="utf-8")

    with ResultStore(path, CONFIG, resume=True) as store:
        assert store.done() == {0, 1, 2}
        assert store.records[1] == json.loads(_line(1))
        # The partial line is gone before anything new is appended.
        assert path.read_text(encoding="utf-8") == whole
        store.append(_record(3))
        store.append(_record(4))

    text = path.read_text(encoding="utf-8")
    assert text == whole + _line(3) + _line(4)
    indices = [json.loads(line)["index"] for line in text.splitlines()]
    assert indices == [0, 1, 2, 3, 4]


def test_resume_of_a_file_with_only_a_partial_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"index": 0, "predi', encoding="utf-8")
    with ResultStore(path, CONFIG, resume=True) as store:
        assert store.done() == set()
        store.append(_record(0))
    assert path.read_text(encoding="utf-8") == _line(0)


def test_resume_of_an_intact_file_leaves_it_unchanged(tmp_path):
    path = tmp_path / "r.jsonl"
    original = (_line(4) + _line(2)).encode()
    path.write_bytes(original)
    with ResultStore(path, CONFIG, resume=True) as store:
        assert store.done() == {2, 4}
    assert path.read_bytes() == original


def test_a_corrupt_whole_line_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    original = (_line(0) + "not json\n" + _line(2)).encode()
    path.write_bytes(original)
    with pytest.raises(RSValueError, match="--out"):
        ResultStore(path, CONFIG, resume=True).open()
    assert path.read_bytes() == original


def test_appending_a_duplicate_index_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultStore(path, CONFIG, resume=False) as store:
        store.append(_record(0))
        before = path.read_bytes()
        with pytest.raises(RuntimeError, match="index 0"):
            store.append({**_record(0), "prediction": 9})
        assert path.read_bytes() == before

    # An index loaded on resume counts as stored too.
    with ResultStore(path, CONFIG, resume=True) as store:
        with pytest.raises(RuntimeError, match="index 0"):
            store.append(_record(0))
        store.append(_record(1))
    assert path.read_text(encoding="utf-8") == _line(0) + _line(1)


def test_append_before_open_raises(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl", CONFIG, resume=False)
    with pytest.raises(RuntimeError):
        store.append(_record(0))
    assert not (tmp_path / "r.jsonl").exists()


def test_a_refused_resume_leaves_even_a_partial_last_line_untouched(tmp_path):
    path = tmp_path / "r.jsonl"
    original = (_line(0) + _line(1)[:15]).encode()
    path.write_bytes(original)
    with pytest.raises(RSValueError, match="--resume"):
        ResultStore(path, {**CONFIG, "seed": 1}, resume=True).open()
    assert path.read_bytes() == original


def test_without_fcntl_the_store_writes_unlocked_and_warns(tmp_path, monkeypatch):
    """Windows has no fcntl: the store still writes and resumes, and says the file is unlocked."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` now raises ImportError
    path = tmp_path / "r.jsonl"
    with pytest.warns(RSWarning, match=r"r\.jsonl is not locked: this platform has no fcntl"):
        with ResultStore(path, CONFIG, resume=False) as store:
            store.append(_record(0))
    with pytest.warns(RSWarning, match="not locked"):
        with ResultStore(path, CONFIG, resume=True) as store:
            assert store.done() == {0}
            store.append(_record(1))
    assert path.read_text(encoding="utf-8") == _line(0) + _line(1)
