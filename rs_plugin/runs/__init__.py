"""Runs: a certify job over a dataset, the same for every engine (in process, Ray) and the audit.

What lives here: the job, a picklable description of what to load and how to certify it, and
the certifier it names with the options that certifier declares
(:mod:`~rs_plugin.runs.job`); the records a run writes and the memory a resumed run restores
from them (:mod:`~rs_plugin.runs.records`); the model and data fingerprints stored with every
record (:mod:`~rs_plugin.runs.fingerprints`); the device a run certifies on
(:mod:`~rs_plugin.runs.device`). Errors name the job's parameters; the command line turns them
into its flags.

May import: :mod:`rs_plugin.certification`, :mod:`rs_plugin.smoothings`, :mod:`rs_plugin.data`,
:mod:`rs_plugin._registry` and :mod:`rs_plugin._validation`; never the command line, the audit
or an adapter (the Ray adapter and the command line import it).
"""

from rs_plugin.runs.device import resolve_device
from rs_plugin.runs.fingerprints import data_fingerprint, model_fingerprint
from rs_plugin.runs.job import CertifyJob, Loaded, load_certifier
from rs_plugin.runs.records import iter_records, restore_memory

__all__ = [
    "CertifyJob",
    "Loaded",
    "data_fingerprint",
    "iter_records",
    "load_certifier",
    "model_fingerprint",
    "resolve_device",
    "restore_memory",
]
