"""What a long audit tells a log while it runs, and the thread count it picks on a busy machine."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from rs_plugin.auditing.progress import Progress, duration
from rs_plugin.certification.threads import busy_cores, threads_for_load, torch_threads
from rs_plugin.cli import main


def test_a_log_gets_lines_with_elapsed_time_and_what_is_left():
    log = io.StringIO()  # not a terminal: plain lines, no bar
    with Progress("certify", 3, "input", stream=log) as progress:
        progress.update(1, "key 0")
        progress.update(2)
    lines = log.getvalue().splitlines()
    # The first step and the last are always reported; fast steps in between are not.
    assert len(lines) == 2
    assert re.fullmatch(
        r"certify: 1/3 inputs \(key 0\); \d+ s elapsed, 2 inputs left, about \d+ s left",
        lines[0],
    )
    assert re.fullmatch(r"certify: 3/3 inputs; \d+ s elapsed, 0 inputs left", lines[1])


def test_durations_read_as_people_read_them():
    assert [duration(s) for s in (0.4, 59.4, 61, 3599, 3600 * 3 + 20 * 60 + 7)] == [
        "0 s",
        "59 s",
        "1 min 1 s",
        "59 min 59 s",
        "3 h 20 min",
    ]


def test_certify_prints_progress_lines_in_a_log(capsys, tmp_path):
    """Standard error is not a terminal here (as in a log or CI): lines, with the inputs done
    out of the total, the elapsed time and what is left, first and last always."""
    args = ["certify", "--limit", "3", "-n", "100", "--n0", "20", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "r.jsonl")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "/3 inputs" in line]
    assert re.fullmatch(
        r"certify: 1/3 inputs; \d+ s elapsed, 2 inputs left, about \d+ s left", lines[0]
    )
    assert re.fullmatch(r"certify: 3/3 inputs; \d+ s elapsed, 0 inputs left", lines[-1])


def test_disabled_progress_prints_nothing():
    log = io.StringIO()
    with Progress("audit", 2, "step", enabled=False, stream=log) as progress:
        progress.update(2)
    assert log.getvalue() == ""


def test_threads_fit_beside_the_other_work():
    most = torch.get_num_threads()
    assert threads_for_load(cores=2, load=1.05) == 1  # one busy process on two cores
    assert threads_for_load(cores=2, load=7.0) == 1
    assert threads_for_load(cores=2, load=0.1) == min(most, 2)
    assert threads_for_load(cores=64, load=0.0) == most  # never more than torch's setting
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == most


@pytest.mark.parametrize("command", ["audit", "certify"])
def test_a_bad_thread_count_is_refused_before_work(command, capsys, tmp_path):
    out = tmp_path / "never"
    for value in ("0", "2147483648", "99999999999999999999"):  # the last two overflowed torch
        assert main([command, "--threads", value, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert (
            "--threads: expected auto or an integer in [1, 4096]" in err and "Traceback" not in err
        )
    assert not out.exists()


def test_certify_runs_on_the_threads_asked_for_and_says_so(capsys, tmp_path):
    most = torch.get_num_threads()
    args = ["certify", "--limit", "2", "-n", "200", "--n0", "20", "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "r.jsonl")]) == 0
    assert capsys.readouterr().err.startswith("certify: 1 torch thread(s) (--threads 1)\n")
    assert torch.get_num_threads() == most  # restored afterwards


def test_busy_cores_sees_a_busy_process_now():
    """Measured over 0.1 s from /proc/stat, not the one-minute load average: a
    spinning child process shows up at once as (about) one busy core."""
    cores = len(os.sched_getaffinity(0))
    quiet = busy_cores(cores)
    assert 0.0 <= quiet <= cores + 1e-9
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(cores) >= 0.5
        if cores == 2:
            assert threads_for_load(cores=2) == 1
    finally:
        spin.kill()
        spin.wait()
