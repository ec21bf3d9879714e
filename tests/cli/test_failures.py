"""A run that fails midway names what failed: the machine's writes, memory, the model, or the
certification itself (each message says what is kept and how to finish the run)."""

from __future__ import annotations

import errno

import pytest
import torch
from torch import nn

from rs_plugin.certification.model_runner import VoteRunner
from rs_plugin.cli.failures import RunFailed, kept_on_failure


class _Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("the model's own bug")


def _failure(raising) -> str:
    with pytest.raises(RunFailed) as caught, kept_on_failure("r.jsonl", lambda: 3, [0, 1, 2],
                                                               lambda: {0}):  # fmt: skip
        raising()
    return str(caught.value)


def test_an_error_out_of_the_models_call_is_the_models():
    runner = VoteRunner(_Raises())
    message = _failure(lambda: runner(torch.zeros(2, 4)))
    assert message.startswith("the model raised ValueError: the model's own bug while")
    assert "certifying input 1" in message and "3 records are kept in r.jsonl" in message


def test_a_module_called_outside_the_vote_runner_is_the_model_too():
    # A denoiser in front of the classifier, the σ search of DDRS, a TorchScript module: the
    # error comes out of a module's call wherever it is made.
    wrapped = nn.Sequential(nn.Identity(), _Raises())
    assert _failure(lambda: wrapped(torch.zeros(2, 4))).startswith("the model raised ValueError")
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 2)))
    message = _failure(lambda: scripted(torch.zeros(2, 3)))
    assert message.startswith("the model raised RuntimeError"), message


def test_an_error_of_the_certification_itself_is_not_blamed_on_the_model():
    def sampling() -> None:
        torch.zeros(2, 3) @ torch.zeros(4, 5)  # not the model: a shape error outside its call

    message = _failure(sampling)
    assert message.startswith("certifying failed with RuntimeError"), message
    assert "the model" not in message and "--resume" in message


def test_running_out_of_memory_says_so_and_names_the_batch_size():
    def allocating() -> None:
        raise MemoryError

    message = _failure(allocating)
    assert message.startswith("certifying ran out of memory (MemoryError"), message
    assert "lower --batch-size" in message
    # torch's allocator failing on the CPU (the message it raises, from a real allocation)
    with pytest.raises(RuntimeError) as real:
        torch.empty(2**62, dtype=torch.uint8)
    assert _failure(lambda: (_ for _ in ()).throw(real.value)).startswith(
        "certifying ran out of memory (RuntimeError"
    )


def test_a_failed_write_names_the_fix():
    def full_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    message = _failure(full_disk)
    assert "writing r.jsonl failed: No space left on device" in message
    assert "free space on its file system" in message
