"""Peak memory of one certify call, measured in a fresh interpreter (for ``rs-plugin bench``)."""

from __future__ import annotations

__all__ = ["memory_sizes", "peak_mb"]

# Run in a fresh interpreter: peak RSS during one certify call and its growth over the RSS
# before it. Linux's VmHWM (reset through clear_refs) is used, not ru_maxrss: a child process's
# ru_maxrss starts at its parent's peak (it survives fork and exec), which hid the growth when the
# bench process itself had grown large.
_MEMORY_PROBE = """
import sys
import torch
from rs_plugin import Gaussian, SmoothedClassifier
from rs_plugin.bench.methods import estimator
from rs_plugin.data import load_demo_model, load_digits

def status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

kind, sigma = sys.argv[1], float(sys.argv[2])
n, batch_size, n0 = (int(value) for value in sys.argv[3:6])
x = load_digits("test")[0][:1]
if kind == "engine":
    smoothed = SmoothedClassifier(load_demo_model(), Gaussian(sigma), 10)
    def certify(samples):
        smoothed.certify(x, n0=n0, n=samples, batch_size=batch_size)
else:
    model = load_demo_model()
    built = estimator(kind, model, tuple(x.shape[1:]), 10, sigma, n0, torch.device("cpu"))
    def certify(samples):
        built.certify(x.numpy(), n=samples, batch_size=batch_size)
certify(min(n, 2 * batch_size))  # warm-up at full batches
before = status_mb("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset VmHWM to the current RSS
certify(n)
peak = status_mb("VmHWM")
print(peak, peak - before)
"""


def peak_mb(kind: str, n: int, batch_size: int, sigma: float, n0: int) -> tuple[float, float]:
    """(peak RSS in MB after one certify of one input with n samples, growth during it)."""
    import subprocess
    import sys

    args = [kind, str(sigma), str(n), str(batch_size), str(n0)]
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, *args], capture_output=True, text=True, check=True
    )
    peak, growth = done.stdout.strip().splitlines()[-1].split()
    return float(peak), float(growth)


def memory_sizes(memory_n: int) -> list[int]:
    """The sample sizes whose peak memory is measured: ``memory_n`` and 1/10, 1/100 of it."""
    return sorted({max(1, memory_n // 100), max(1, memory_n // 10), memory_n})
