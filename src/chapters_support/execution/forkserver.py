"""The fork server behind warm kernels: import the book's heavy modules once, then fork one
fresh ipykernel process per chapter.

Run as ``python -m chapters_support.execution.forkserver --fd FD --parent PID MODULE...``
by :class:`chapters_support.execution.warm.WarmKernels`; the kernel provisioner in
``warm.py`` asks it for kernels over a Unix socket (one SOCK_SEQPACKET connection per kernel:
the request with the kernel's stdin/stdout/stderr as passed file descriptors, the reply with
the kernel's pid, and later its exit status, which only this process, its parent, can reap).

Written by hand because nothing in the ecosystem forks *kernels*: ``multiprocessing``'s
forkserver runs pickled Python targets under its own bootstrap (stdin closed, the parent's
``__main__`` re-imported, atexit skipped), is private to the process that started it, so
the execution workers could not share one, and drops preload failures silently.

Safe by construction: before it forks, this process has only imported modules. It never
initialises CUDA or runs a torch operation, and it checks that it is still single-threaded
and that CUDA is not initialised before it serves; otherwise it refuses every fork (and the
provisioner starts a plain kernel instead). OpenBLAS (numpy's) starts its thread pool when
it is loaded, so the imports run with ``OPENBLAS_NUM_THREADS=1`` and each kernel sets the
thread count a fresh process would have read from its environment.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import Any

# what ipykernel sets when the kernel's environment names no backend (kernelapp.init_gui_pylab);
# matplotlib reads it once, at import, so the server must import it under the same value
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# the machinery every kernel imports: preloaded whatever the book says
# (what IPKernelApp.initialize imports in a kernel that has imported ipykernel.kernelapp)
KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "sqlite3",
    "tornado.platform.asyncio",
    "tornado.queues",
)
MESSAGE_BYTES = 1 << 20
# the seed older torch releases give the CPU generator at import; newer ones draw one at random
TORCH_FIXED_SEED = 67280421310721


def native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # pragma: no cover - not Linux
        return 1


def unsafe_reason() -> str | None:
    """Why forking this process now would not be safe, or None."""
    threads = native_threads()
    if threads != 1:
        return f"the preloaded modules started {threads - 1} thread(s) in the fork server"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised in the fork server"
    return None


def preload(modules: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Import each module; a module that fails is left for the kernel to import itself.

    Also returns the environment variables the imports set (ipykernel's debugger and torch
    set some at import): a kernel that imported them itself would have them."""
    before = dict(os.environ)
    added = {}
    for name, value in (("OPENBLAS_NUM_THREADS", "1"), ("MPLBACKEND", INLINE_BACKEND)):
        if not os.environ.get(name):
            os.environ[name] = value
            added[name] = value
    loaded, failed = [], {}
    for name in dict.fromkeys([*modules, *KERNEL_MODULES]):
        try:
            importlib.import_module(name)
        except Exception as error:  # any failure: the kernel imports it the usual way
            failed[name] = f"{type(error).__name__}: {error}"
        else:
            loaded.append(name)
    for name in added:
        del os.environ[name]
    return loaded, failed, {k: v for k, v in os.environ.items() if k not in before}


def blas_threads(env: dict[str, str]) -> int:
    """The OpenBLAS thread count a fresh process with ``env`` starts with (OpenBLAS reads
    these variables in this order, else it uses every core it may run on)."""
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


def fresh_state(env: dict[str, str], server_env: dict[str, str]) -> None:
    """Make a forked child what a fresh kernel process is: reseeded, with its own threads.

    ``random`` reseeds itself after a fork (``os.register_at_fork``); numpy's global
    generator is seeded from the OS at import, torch's CPU generator with its fixed default
    seed or a random one, by release (CUDA's are made when the kernel first uses CUDA).
    """
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        generator = torch.default_generator
        if generator.initial_seed() == TORCH_FIXED_SEED:
            generator.manual_seed(TORCH_FIXED_SEED)
        else:
            generator.seed()
        wanted = env.get("OMP_NUM_THREADS", "").strip()
        if wanted != server_env.get("OMP_NUM_THREADS", "").strip() and wanted.isdigit():
            torch.set_num_threads(max(1, int(wanted)))
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=blas_threads(env), user_api="blas")


class ForkServer:
    def __init__(self, listener: socket.socket, parent: int):
        self.listener = listener
        self.parent = parent
        self.env = dict(os.environ)
        self.prefix = [sys.executable, *sys.orig_argv[1 : sys.orig_argv.index("-m")]]
        spec = importlib.util.find_spec("ipykernel_launcher")
        self.launcher = spec.origin if spec is not None and spec.origin else "ipykernel_launcher"
        self.loaded: list[str] = []
        self.failed: dict[str, str] = {}
        self.import_env: dict[str, str] = {}
        self.refusal = unsafe_reason()
        self.selector = selectors.DefaultSelector()
        self.kernels: dict[int, socket.socket] = {}  # pid -> the connection that asked for it
        self.pidfds: dict[int, int] = {}  # pid -> a descriptor readable once it has exited
        self.stopping = False

    def hello(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "prefix": self.prefix,
            "preloaded": self.loaded,
            "failed": self.failed,
            "refusal": self.refusal,
        }

    def serve(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ)
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.05):
                if key.fileobj is self.listener:
                    conn, _ = self.listener.accept()
                    self.selector.register(conn, selectors.EVENT_READ)
                elif key.data is not None:  # a kernel's pidfd: it has exited
                    self.reap()
                else:
                    self.readable(key.fileobj)  # type: ignore[arg-type]
            self.reap()
            if os.getppid() != self.parent:  # whoever started us is gone
                break
        self.shutdown()

    def readable(self, conn: socket.socket) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(conn, MESSAGE_BYTES, 3)
        except OSError:
            message, fds = b"", []
        if not message:  # the provisioner hung up: nobody manages its kernel any more
            self.forget(conn, kill=True)
            return
        request = json.loads(message)
        why = self.refusal or self.refuse(request, fds)
        if why is not None:
            for fd in fds:
                os.close(fd)
            self.send(conn, {"refused": why})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.become_kernel(request, fds, conn)  # never returns
        for fd in fds:
            os.close(fd)
        self.kernels[pid] = conn
        self.watch(pid)
        self.send(conn, {"pid": pid})

    def watch(self, pid: int) -> None:
        """Wake up as soon as the kernel exits (a pidfd, Linux >= 5.3), rather than at the
        next tick, so a finished chapter's kernel is reaped and reported at once."""
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return  # reaped at the next tick
        self.pidfds[pid] = fd
        self.selector.register(fd, selectors.EVENT_READ, data=pid)

    def unwatch(self, pid: int) -> None:
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            os.close(fd)

    def refuse(self, request: dict[str, Any], fds: list[int]) -> str | None:
        argv = request.get("argv") or []
        n = len(self.prefix)
        if argv[:n] != self.prefix or argv[n : n + 2] != ["-m", "ipykernel_launcher"]:
            return (
                f"the kernel command {argv[: n + 2]} is not this server's Python "
                f"{self.prefix} -m ipykernel_launcher"
            )
        if len(fds) != 3:
            return f"expected the kernel's stdin, stdout and stderr, got {len(fds)} descriptors"
        return None

    def become_kernel(self, request: dict[str, Any], fds: list[int], mine: socket.socket) -> None:
        """The child: a fresh kernel process for ``request``; it tells the provisioner on
        ``mine`` when its sockets are bound, so the client connects once, with no retry."""
        code = 1
        try:
            os.setsid()  # its own process group, as jupyter_client's launcher gives a kernel
            for conn in {*self.kernels.values(), *self.connections()} - {mine}:
                conn.close()
            self.selector.close()
            self.listener.close()
            for fd in self.pidfds.values():
                os.close(fd)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                if fd > 2:
                    os.close(fd)
            for signum in (signal.SIGTERM, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            # what the preloaded imports set, unless the kernel's own environment says it
            env = {**self.import_env, **request["env"], "JPY_PARENT_PID": str(os.getppid())}
            os.environ.clear()
            os.environ.update(env)
            os.chdir(request["cwd"])
            del sys.path[0]  # this server's own entry, as ipykernel_launcher removes the cwd
            fresh_state(env, self.env)
            sys.argv = [self.launcher, *request["argv"][len(self.prefix) + 2 :]]
            # ipykernel read JPY_PARENT_PID when this server imported it; say it again
            sys.argv.append(f"--IPKernelApp.parent_handle={os.getppid()}")
            from ipykernel.kernelapp import IPKernelApp

            app = IPKernelApp.instance()  # what launch_new_instance does, with a word between
            app.initialize()
            with contextlib.suppress(OSError):
                mine.send(json.dumps({"ready": True}).encode())
            mine.close()
            app.start()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                import atexit

                atexit._run_exitfuncs()  # what a fresh process does at exit
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def connections(self) -> list[socket.socket]:
        return [
            key.fileobj  # type: ignore[misc]
            for key in self.selector.get_map().values()
            if key.fileobj is not self.listener and key.data is None
        ]

    def send(self, conn: socket.socket, message: dict[str, Any]) -> None:
        try:
            conn.send(json.dumps(message).encode())
        except OSError:
            self.forget(conn, kill=True)

    def reap(self) -> None:
        while self.kernels:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.unwatch(pid)
            conn = self.kernels.pop(pid, None)
            if conn is not None:
                self.send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                self.forget(conn)

    def forget(self, conn: socket.socket, *, kill: bool = False) -> None:
        for pid, owner in list(self.kernels.items()):
            if owner is conn and kill:
                kill_group(pid)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        conn.close()

    def shutdown(self) -> None:
        for pid in list(self.kernels):
            kill_group(pid)
        deadline = time.monotonic() + 5
        while self.kernels and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)
        for conn in self.connections():
            conn.close()
        self.listener.close()


def kill_group(pid: int) -> bool:
    """SIGKILL the process group ``pid`` leads (a kernel is a session leader), else the
    process alone; whether there was anything to kill."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return True
        except OSError:
            continue
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chapters_support.execution.forkserver")
    parser.add_argument("--fd", type=int, required=True, help="the bound, listening socket")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args(argv)
    # the parent bound the socket before it started us: kernels requested at once wait in
    # its backlog while the modules load
    listener = socket.socket(fileno=args.fd)
    server = ForkServer(listener, args.parent)

    def stop(signum: int, frame: Any) -> None:
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    start = time.perf_counter()
    server.loaded, server.failed, server.import_env = preload(args.modules)
    server.refusal = unsafe_reason()
    gc.collect()
    gc.freeze()  # keep the preloaded objects out of the children's collections: fewer copied pages
    print(json.dumps({**server.hello(), "seconds": time.perf_counter() - start}), flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
