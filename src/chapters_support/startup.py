"""Import-time costs that the processes this package starts for itself need not pay.

jsonschema, which nbformat imports to validate notebooks, imports ``rfc3987_syntax`` whenever
it is installed (``jsonschema[format-nongpl]``, which jupyter-events requires, installs it),
and ``rfc3987_syntax`` compiles some 35 Earley parsers at import: 1.1 s of CPU measured here,
in every process that reads a notebook (python-jsonschema/jsonschema#1428). It serves only
the ``iri`` and ``iri-reference`` formats, which no notebook schema uses. The ``chapters``
command and the execution workers skip it, as if it were not installed; a process of the
user's own (a kernel, a script importing this package) is left alone.
"""

from __future__ import annotations

import sys

SKIPPED = ("rfc3987_syntax",)


def skip_slow_imports() -> None:
    """Make ``import rfc3987_syntax`` fail fast (jsonschema then leaves out its formats)."""
    for name in SKIPPED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def execution_worker(devices: object = None) -> None:
    """What an execution worker does before its first task (``ProcessPoolExecutor``'s
    initializer): skip the slow import, leave a terminal's Ctrl-C, which reaches the whole
    process group, to the process that started it (which stops the run in order), and take
    the GPU its kernels will see, when there are GPUs (``devices``: execution.gpus)."""
    import signal

    skip_slow_imports()
    # SIGTERM too: the run kills its workers itself (SIGKILL), after it has cached what
    # finished; a worker whose run is gone exits when its task queue closes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if devices is not None:
        from chapters_support.execution.gpus import take_device

        take_device(devices)
