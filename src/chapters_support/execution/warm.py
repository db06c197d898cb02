"""Warm kernels: every chapter still runs in its own fresh ipykernel process, forked from a
server that has already imported the book's heavy modules, so the imports are paid once.

Three pieces, each where Jupyter expects it:

- :class:`WarmKernels` (the executing process) starts the fork server
  (``forkserver.py``) for one run of chapters and stops it, with every kernel left, after.
- :class:`WarmKernelProvisioner` is a jupyter_client kernel provisioner (entry point
  ``chapters-warm-provisioner``): it asks the server for a kernel instead of starting a new
  Python, and falls back to the normal launch when the server refuses (another Python or
  kernel, an unsafe server). nbclient and everything above it are unchanged.
- :class:`WarmKernelManager` names that provisioner in the kernel spec's metadata, as a
  ``kernel.json`` would, for the kernels of one run only.

Off with ``CHAPTERS_WARM_KERNELS=0`` or ``chapters_warm_kernels: false`` in ``_config.yml``;
off by itself where ``os.fork`` or Unix sockets are missing. Either way the run says which
kernels it used and why.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode, observe

from chapters_support.execution.forkserver import MESSAGE_BYTES

WARM_ENV = "CHAPTERS_WARM_KERNELS"
PROVISIONER = "chapters-warm-provisioner"
# how long a kernel request may wait for the server to finish importing
READY_SECONDS = 180.0
# each kernel this worker process launched: how ("forked", "plain ..."), when it was asked
# for and, when forked, when the server forked it (epoch s: the gap is the wait for the
# server's imports)
LAUNCHES: list[dict[str, Any]] = []
# the folder where this worker registers the kernels it runs (interrupt.KernelRegistry)
REGISTRY: str | None = None


class NotForkable(RuntimeError):
    """The server will not fork this kernel; start it the normal way."""


def requested(config_value: bool = True) -> tuple[bool, str]:
    """Whether warm kernels are wanted, and if not, who said so (the variable wins)."""
    value = os.environ.get(WARM_ENV, "").strip()
    if value:
        if value.lower() in {"0", "false", "no", "off"}:
            return False, f"{WARM_ENV}={value}"
        return True, ""
    if not config_value:
        return False, "chapters_warm_kernels: false in _config.yml"
    return True, ""


def from_config(sphinx_config: dict[str, Any]) -> tuple[tuple[bool, str], list[str]]:
    """``(requested(...), preload)`` from a book's ``sphinx: config:`` (the CLI's view of
    ``chapters_warm_kernels`` and ``chapters_warm_preload``)."""
    wanted = sphinx_config.get("chapters_warm_kernels", True)
    return requested(bool(wanted)), list(sphinx_config.get("chapters_warm_preload") or [])


def unavailable() -> str | None:
    """Why this platform cannot fork kernels, or None."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"forking kernels needs Linux, this is {sys.platform}"
    if not hasattr(socket, "AF_UNIX") or not hasattr(socket, "send_fds"):
        return "this Python has no Unix sockets with descriptor passing"
    return None


def first_imports(notebooks: Iterable[Any]) -> list[str]:
    """The modules the chapters' first code cells import, in order of first appearance
    (``import a.b`` -> ``a.b``; ``from a.b import c`` -> ``a.b``)."""
    names: dict[str, None] = {}
    for notebook in notebooks:
        cell = next((c for c in notebook.cells if c.cell_type == "code"), None)
        if cell is None:
            continue
        # IPython magics and shell escapes are not Python
        source = "\n".join(
            "" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.split("\n")
        )
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                names.update((alias.name, None) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names[node.module] = None
    return list(names)


def kernel_prefix(kernel_name: str) -> list[str] | None:
    """The kernel's Python and its interpreter options, when the kernel is an ipykernel
    started as ``PYTHON [OPTIONS] -m ipykernel_launcher -f {connection_file}``."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = list(KernelSpecManager().get_kernel_spec(kernel_name).argv)
    except (NoSuchKernel, OSError, ValueError):
        return None
    if "-m" not in argv:
        return None
    at = argv.index("-m")
    if argv[at + 1 : at + 2] != ["ipykernel_launcher"]:
        return None
    # jupyter_client starts "python" as the running interpreter (format_kernel_cmd)
    if argv[0] in {"python", f"python{sys.version_info[0]}"}:
        argv[0] = sys.executable
    return argv[:at]


class WarmKernels:
    """The fork server for one run of chapters: ``with WarmKernels(...) as warm:``, then
    hand ``warm.address`` to the workers (None: plain kernels, ``warm.describe()`` says why).
    """

    def __init__(
        self,
        *,
        preload: Iterable[str],
        env: dict[str, str],
        kernel_name: str = "python3",
        enabled: tuple[bool, str] = (True, ""),
    ) -> None:
        self.preload = [m for m in dict.fromkeys(preload) if m]
        self.env = env
        self.kernel_name = kernel_name
        self.enabled = enabled
        self.reason: str | None = None
        self.address: str | None = None
        self.process: subprocess.Popen[str] | None = None
        self._tmp: str | None = None
        self._hello: dict[str, Any] | None = None

    def __enter__(self) -> WarmKernels:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        wanted, why = self.enabled
        prefix = kernel_prefix(self.kernel_name)
        self.reason = (
            (None if wanted else f"warm kernels turned off by {why}")
            or unavailable()
            or (
                None
                if prefix is not None
                else f"the kernel {self.kernel_name!r} is not an ipykernel this can fork"
            )
        )
        if self.reason is not None or prefix is None:
            return
        self._tmp = tempfile.mkdtemp(prefix="chapters-warm-")
        address = os.path.join(self._tmp, "fork.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(address)
        listener.listen(64)
        log = open(os.path.join(self._tmp, "server.log"), "w", encoding="utf-8")  # noqa: SIM115
        command = [
            *prefix,
            "-m",
            "chapters_support.execution.forkserver",
            "--fd",
            str(listener.fileno()),
            "--parent",
            str(os.getpid()),
            *self.preload,
        ]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                cwd=self._tmp,
                pass_fds=[listener.fileno()],
                start_new_session=True,  # a terminal's Ctrl-C is for the build, not for it
                text=True,
            )
        except OSError as error:
            self.reason = f"the fork server did not start: {error}"
        finally:
            listener.close()
            log.close()
        if self.reason is None:
            self.address = address

    def hello(self) -> dict[str, Any]:
        """What the server says once it has imported everything (waits for it)."""
        if self._hello is None:
            line = self.process.stdout.readline() if self.process and self.process.stdout else ""
            try:
                self._hello = json.loads(line) if line else {}
            except json.JSONDecodeError:
                self._hello = {}
            if not self._hello:
                self._hello = {"refusal": f"the fork server failed: {self._log_tail()}"}
        return self._hello

    def describe(self) -> str:
        """One line for the run's report: which kernels, and why."""
        if self.reason is not None:
            return f"plain kernels: {self.reason}"
        hello = self.hello()
        if hello.get("refusal"):
            return f"plain kernels: {hello['refusal']}"
        loaded = [m for m in hello.get("preloaded", []) if m in self.preload]
        line = (
            f"warm kernels, forked from a server that imported {', '.join(loaded) or 'nothing'} "
            f"once in {hello.get('seconds', 0.0):.1f} s"
        )
        failed = hello.get("failed") or {}
        if failed:
            line += "; the kernels import for themselves " + "; ".join(
                f"{name} ({why})" for name, why in failed.items()
            )
        return line

    def _log_tail(self) -> str:
        if self._tmp is None:
            return ""
        try:
            text = Path(self._tmp, "server.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no log"
        return " ".join(text.strip().splitlines()[-3:]) or "no output"

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)  # it kills the kernels left
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        self.address = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class ForkedKernel:
    """A kernel forked by the server, with the part of ``subprocess.Popen`` that
    :class:`~jupyter_client.provisioning.LocalProvisioner` uses."""

    stdin = stdout = stderr = None

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.returncode: int | None = None
        self.forked_at: float | None = None

    @classmethod
    def launch(
        cls,
        address: str,
        cmd: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
    ) -> ForkedKernel:
        opened: list[int] = []

        def descriptor(stream: Any, default: int | None) -> int:
            if stream is None and default is not None:
                return default
            if stream is None or stream == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                opened.append(fd)
                return fd
            if isinstance(stream, int) and stream >= 0:
                return stream
            if hasattr(stream, "fileno"):
                return int(stream.fileno())
            raise NotForkable(f"the kernel's streams must be files, not {stream!r}")

        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # stdin: a kernel reads none; stdout and stderr: where a started kernel's would go
            fds = [descriptor(stdin, None), descriptor(stdout, 1), descriptor(stderr, 2)]
            conn.settimeout(READY_SECONDS)
            conn.connect(address)
            request = {"argv": list(cmd), "env": dict(env), "cwd": str(cwd)}
            socket.send_fds(conn, [json.dumps(request).encode()], fds)
            reply = json.loads(conn.recv(MESSAGE_BYTES) or b"{}")
        except (OSError, ValueError) as error:
            conn.close()
            raise NotForkable(f"the fork server did not answer: {error}") from None
        finally:
            for fd in opened:
                os.close(fd)
        if "pid" not in reply:
            conn.close()
            raise NotForkable(reply.get("refused", "the fork server did not fork"))
        kernel = cls(conn, int(reply["pid"]))
        kernel.forked_at = time.time()
        kernel._await_ready()
        return kernel

    def _await_ready(self) -> None:
        """Wait until the kernel has bound its sockets (or has died trying), so that the
        client's first connection succeeds instead of waiting out ZeroMQ's reconnect."""
        self.conn.settimeout(READY_SECONDS)
        try:
            data = self.conn.recv(MESSAGE_BYTES)
        except OSError:
            return  # no word: jupyter_client's own wait for the kernel decides
        if data and "exit" in (message := json.loads(data)):
            self.returncode = int(message["exit"])
            self.conn.close()
        elif not data:
            self.returncode = -signal.SIGKILL
            self.conn.close()

    def _receive(self, timeout: float | None) -> None:
        self.conn.settimeout(timeout)
        try:
            data = self.conn.recv(MESSAGE_BYTES)
        except (TimeoutError, BlockingIOError):
            return
        except OSError:
            data = b""
        # no message: the server itself is gone (and took its kernels with it)
        self.returncode = int(json.loads(data)["exit"]) if data else -signal.SIGKILL
        self.conn.close()

    def poll(self) -> int | None:
        if self.returncode is None:
            self._receive(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._receive(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0.0)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmKernelProvisioner(LocalProvisioner):
    """Starts a kernel by asking the fork server, else as LocalProvisioner does."""

    fork_server = Unicode("", config=True, help="Address (Unix socket) of the fork server.")
    kind = "plain"

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        scrubbed = self._scrub_kwargs(kwargs)
        try:
            if not self.fork_server:
                raise NotForkable("no fork server")
            process = ForkedKernel.launch(
                self.fork_server,
                cmd,
                env=scrubbed.get("env") or dict(os.environ),
                cwd=scrubbed.get("cwd") or os.getcwd(),
                stdin=scrubbed.get("stdin"),
                stdout=scrubbed.get("stdout"),
                stderr=scrubbed.get("stderr"),
            )
        except NotForkable as why:
            self.kind = f"plain ({why})"
            return await super().launch_kernel(cmd, **kwargs)
        self.kind = "forked"
        # LocalProvisioner types it Popen; it uses the part of Popen ForkedKernel provides
        self.process = process  # type: ignore[assignment]
        self.pid = self.pgid = process.pid  # the child made itself a session leader
        self.cwd = scrubbed.get("cwd", Path.cwd())
        return self.connection_info


class PromptKernelClient(AsyncKernelClient):
    """A kernel client that is ready as soon as the kernel answers ``kernel_info``.

    jupyter_client's ``wait_for_ready`` then also waits until IOPub has been quiet for 0.2 s,
    and gives a status lost to ZeroMQ's slow-joiner 0.2 s more: fixed costs per kernel that
    are most of a warm kernel's start. nbclient reads only the IOPub messages that answer
    its own requests, so nothing depends on those waits.
    """

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while True:
            self.kernel_info()
            try:
                msg = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                msg = None
            if msg is not None and msg["msg_type"] == "kernel_info_reply":
                # IOPub is connected once the kernel's status reaches us; a status sent
                # before our subscription reached the kernel is lost, so ask again soon
                try:
                    await self.iopub_channel.get_msg(timeout=0.02)
                except Empty:
                    pass
                else:
                    self._handle_kernel_info_reply(msg)
                    return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")

    wait_for_ready = _async_wait_for_ready  # AsyncKernelClient binds the name to its own


class WarmKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels come from the fork server at ``fork_server`` (with the
    prompt client), else are started as usual (with jupyter_client's own client)."""

    fork_server = Unicode("", config=True, help="Address (Unix socket) of the fork server.")

    @observe("fork_server")
    def _fork_server_changed(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.client_class = f"{__name__}.PromptKernelClient"

    @property
    def kernel_spec(self) -> Any:
        spec = super().kernel_spec
        if spec is not None and self.fork_server and "kernel_provisioner" not in spec.metadata:
            spec.metadata = {
                **spec.metadata,
                "kernel_provisioner": {
                    "provisioner_name": PROVISIONER,
                    "config": {"fork_server": self.fork_server},
                },
            }
        return spec

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # jupyter_client polls a stopping kernel every 0.1 s: most of a kernel's shutdown,
        # once per chapter; asking every 10 ms costs nothing a chapter would notice
        await super()._async_wait(pollinterval=min(pollinterval, 0.01))

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        from chapters_support.execution.interrupt import KernelRegistry

        at = time.time()
        await super()._async_launch_kernel(kernel_cmd, **kw)
        process = getattr(self.provisioner, "process", None)
        pid = getattr(self.provisioner, "pid", None)
        if pid is not None:
            KernelRegistry.register(REGISTRY, pid)
        LAUNCHES.append(
            {
                "kernel": getattr(self.provisioner, "kind", "plain"),
                "at": at,
                "forked": getattr(process, "forked_at", None),
                "pid": pid,
            }
        )
