"""A run that fails midway ends in one line that says what failed and what is kept.

Two things can fail after the first record is written: the machine (a full disk, a file-size
limit, an I/O error: an :class:`OSError` from writing the results) and the model (its forward
pass raising on a noisy batch); the message tells those apart from running out of memory and
from any other error of the certification itself. None may end in a traceback, and none loses
a record: each record is appended whole before the next input starts (a record cut short by
the failure is recognised and dropped by ``--resume``), so the message says how many are kept,
where, and that the same command with ``--resume`` finishes the run.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
from collections.abc import Callable, Iterator, Sequence

from rs_plugin._validation import RSValueError

__all__ = ["RunFailed", "kept_on_failure"]

_WRITE_HINTS = {
    errno.ENOSPC: "free space on its file system",
    errno.EDQUOT: "free space in the disk quota",
    errno.EFBIG: "raise the file-size limit (ulimit -f)",
}


class RunFailed(RuntimeError):
    """The run stopped after some work; the message says what failed and what is kept
    (the command line prints it on one line and exits with status 1)."""


@contextlib.contextmanager
def kept_on_failure(
    out: str,
    stored: Callable[[], int],
    todo: Sequence[int],
    done: Callable[[], set[int]],
    *,
    rerun: str = "run the same command with --resume",
) -> Iterator[None]:
    """Turn an OS error on writing, or an error the model raised, into :class:`RunFailed`.

    Args:
        out: the results file (named in the message).
        stored: the number of records in it now.
        todo: the indices this run set out to certify, in order.
        done: the indices stored now (the first of ``todo`` not among them is the input the
            failure happened on, or one batched with it).
        rerun: how to finish the run once the cause is fixed.
    """
    try:
        yield
    except (RSValueError, KeyboardInterrupt, RunFailed):
        raise
    except OSError as error:
        hint = _WRITE_HINTS.get(error.errno or 0, "fix the cause")
        raise RunFailed(
            f"writing {out} failed: {error.strerror or error} (errno {error.errno}); "
            f"{stored()} records are kept in it; {hint} and {rerun}"
        ) from error
    except Exception as error:
        finished = done()
        pending = [i for i in todo if i not in finished]
        where = f" while certifying input {pending[0]}" if pending else ""
        first = str(error).strip().splitlines()
        what = f"{type(error).__name__}: {first[0] if first else ''}{where}"
        kept = f"{stored()} records are kept in {out}"
        if _out_of_memory(error):
            raise RunFailed(
                f"certifying ran out of memory ({what}); {kept}; lower --batch-size and {rerun}"
            ) from error
        if _raised_by_model(error):
            raise RunFailed(
                f"the model raised {what} (its noisy batch may hold samples of the inputs after "
                f"it); {kept}; fix the model and {rerun}"
            ) from error
        raise RunFailed(
            f"certifying failed with {what}; {kept}; fix the cause (a setting too large for "
            f"this machine, say) and {rerun}"
        ) from error


def _out_of_memory(error: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, or torch's on the CPU or a GPU."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError)
        and ("out of memory" in text or "can't allocate memory" in text)
    )


def _raised_by_model(error: BaseException) -> bool:
    """True when the error came out of a model's call: its traceback passes through
    ``nn.Module.__call__`` (the user's network, a denoiser in front of it, a TorchScript
    module; in the votes, the σ search or the probe) or the vote runner's call of a model that
    is a plain function. Sampling, bounds and records call no module."""
    # Imported here: the command line answers --help without importing torch.
    from torch import nn

    from rs_plugin.certification.model_runner import VoteRunner

    calls = {
        (inspect.getsourcefile(nn.Module), "_call_impl"),
        (inspect.getsourcefile(nn.Module), "_wrapped_call_impl"),
        (inspect.getsourcefile(VoteRunner), "__call__"),
    }
    trace = error.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        if (code.co_filename, code.co_name) in calls:
            return True
        trace = trace.tb_next
    return False
