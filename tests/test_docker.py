"""The CUDA image's files (docker/): lint, a security policy, and sshd and Jupyter as they run.

No Docker engine is needed: the Dockerfile is linted, the policy is read from the files, and
the image's sshd_config and jupyter_server_config.py are exercised by a real sshd and a real
Jupyter server on localhost.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import require_tool

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SSHD_CONFIG = DOCKER / "sshd_config"
JUPYTER_CONFIG = DOCKER / "jupyter_server_config.py"
# sshd runs unprivileged in the image; the tests use `daemon` (nss-systemd reports `nobody`'s
# password as locked, and sshd without PAM refuses locked accounts).
UNPRIVILEGED = pwd.getpwnam("daemon")


def require_module(name: str) -> None:
    try:
        __import__(name)
    except ImportError:
        message = f"Python package {name} is not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early with {process.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def as_unprivileged(command: list[str]) -> list[str]:
    """Run as `daemon` when the tests run as root (CI does), as the image runs sshd as uid 1000."""
    if os.geteuid() != 0:
        return command
    setpriv = require_tool("setpriv")
    uid, gid = UNPRIVILEGED.pw_uid, UNPRIVILEGED.pw_gid
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]


# --- the policy ------------------------------------------------------------------------------

ROOT_USERS = {"root", "0"}
# An empty token switches Jupyter's authentication off, however it is spelled:
# `--ServerApp.token=''`, `c.IdentityProvider.token = ""`, `JUPYTER_TOKEN=`, `JUPYTER_TOKEN: ""`.
EMPTY_TOKEN = re.compile(
    r"""(?<![a-z])token(?:\s*=\s*|\s+)(?:''|""|$)|^\s*-?\s*["']?\w*token["']?\s*:\s*(?:''|""|~|null)?\s*$""",
    re.IGNORECASE,
)
FORBIDDEN = [
    (re.compile(r"\bchpasswd\b"), "sets a password with chpasswd"),
    (re.compile(r"--allow-root|allow_root\s*=\s*True"), "lets Jupyter run as root"),
    (EMPTY_TOKEN, "sets an empty Jupyter token"),
    (re.compile(r"^\s*PermitRootLogin\s+(?!no\s*$)", re.IGNORECASE), "PermitRootLogin is not no"),
    (re.compile(r"^\s*PasswordAuthentication\s+yes", re.IGNORECASE), "allows SSH passwords"),
    (re.compile(r"^\s*PermitEmptyPasswords\s+yes", re.IGNORECASE), "allows empty SSH passwords"),
    (re.compile(r"^\s*COPY\b.*ssh_host_", re.IGNORECASE), "bakes SSH host keys into the image"),
]
SSHD_REQUIRED = {
    "permitrootlogin": "no",
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "pubkeyauthentication": "yes",
}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    instructions = dockerfile_instructions(text)
    froms = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    if not froms:
        return ["Dockerfile: no FROM"]
    for index in froms:
        image = instructions[index][1].split()[0]
        name, _, digest = image.partition("@")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest) or ":" not in name:
            problems.append(f"Dockerfile: base image {image!r} is not pinned by tag and digest")
    final_stage = instructions[froms[-1] :]
    users = [arguments for keyword, arguments in final_stage if keyword == "USER"]
    if not users:
        problems.append("Dockerfile: no USER, the container would run as root")
    else:
        user, _, group = users[-1].partition(":")
        if user in ROOT_USERS or group in ROOT_USERS:
            problems.append(f"Dockerfile: final USER {users[-1]} is root")
        elif not user.isdigit() or (group and not group.isdigit()):
            problems.append(f"Dockerfile: final USER {users[-1]} is not numeric uid:gid")
    return problems


def compose_problems(text: str) -> list[str]:
    problems = []
    compose = yaml.safe_load(text) or {}
    for name, service in (compose.get("services") or {}).items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
                published = port.get("published")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
                published = parts[-2] if len(parts) >= 2 else None
            if published is not None and host_ip != "127.0.0.1":
                problems.append(f"compose: service {name} publishes {port!r} beyond 127.0.0.1")
        if service.get("network_mode") == "host":
            problems.append(f"compose: service {name} uses the host's network")
        if service.get("privileged"):
            problems.append(f"compose: service {name} is privileged")
        if str(service.get("user", "")).split(":")[0] in ROOT_USERS:
            problems.append(f"compose: service {name} runs as root")
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        if "JUPYTER_TOKEN" in environment and not str(environment["JUPYTER_TOKEN"]).startswith(
            "${JUPYTER_TOKEN:?"
        ):
            problems.append(f"compose: service {name} does not require JUPYTER_TOKEN (:?)")
    return problems


def sshd_config_problems(text: str) -> list[str]:
    settings: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            # sshd keeps the first value it reads for most keywords.
            settings.setdefault(words[0].lower(), " ".join(words[1:]))
    return [
        f"sshd_config: {keyword} must be {value}"
        for keyword, value in SSHD_REQUIRED.items()
        if settings.get(keyword, "").lower() != value
    ]


def container_policy_problems(files: dict[str, str]) -> list[str]:
    """What breaks the image's security policy in these files (name -> text); [] when none."""
    problems = []
    for name, text in files.items():
        for number, line in enumerate(text.splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            for pattern, why in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{name}:{number}: {why}: {line.strip()}")
        if name == "Dockerfile":
            problems += dockerfile_problems(text)
        elif name.startswith("compose"):
            problems += compose_problems(text)
        elif name == "sshd_config":
            problems += sshd_config_problems(text)
    return problems


POLICY_FILES = [DOCKERFILE, COMPOSE, ENTRYPOINT, SSHD_CONFIG, JUPYTER_CONFIG]


def test_shipped_files_follow_the_container_policy():
    files = {path.name: path.read_text(encoding="utf-8") for path in POLICY_FILES}
    assert container_policy_problems(files) == []


BAD_DOCKERFILE = """\
FROM pytorch/pytorch:latest
RUN echo 'root:secret' | chpasswd
COPY ssh_host_ed25519_key /etc/ssh/
CMD ["jupyter", "lab", "--allow-root", "--ServerApp.token=''"]
"""


def test_policy_catches_a_bad_dockerfile():
    problems = "\n".join(container_policy_problems({"Dockerfile": BAD_DOCKERFILE}))
    for expected in (
        "chpasswd",
        "run as root",
        "empty Jupyter token",
        "host keys",
        "no USER",
        "not pinned by tag and digest",
    ):
        assert expected in problems


@pytest.mark.parametrize(
    ("user", "expected"),
    [("root", "is root"), ("0:0", "is root"), ("1000:0", "is root"), ("author", "not numeric")],
)
def test_policy_catches_a_root_or_named_final_user(user, expected):
    text = "FROM a:1@sha256:" + "0" * 64 + f"\nUSER 1000:1000\nRUN true\nUSER {user}\n"
    assert any(expected in problem for problem in dockerfile_problems(text))


def test_policy_catches_bad_compose_and_sshd_config():
    compose = yaml.safe_dump(
        {
            "services": {
                "lab": {
                    "ports": ["8888:8888", {"target": 2222, "published": 2222}],
                    "environment": {"JUPYTER_TOKEN": "${JUPYTER_TOKEN:-}"},
                },
                "ssh": {"ports": ["0.0.0.0:2222:2222"], "user": "root"},
            }
        }
    )
    sshd = "PermitRootLogin yes\nPasswordAuthentication yes\n"
    problems = "\n".join(container_policy_problems({"compose.yaml": compose, "sshd_config": sshd}))
    assert "'8888:8888' beyond 127.0.0.1" in problems
    assert "2222" in problems and "'0.0.0.0:2222:2222' beyond" in problems
    assert "does not require JUPYTER_TOKEN" in problems
    assert "service ssh runs as root" in problems
    assert "PermitRootLogin is not no" in problems
    assert "allows SSH passwords" in problems
    assert "kbdinteractiveauthentication must be no" in problems


@pytest.mark.parametrize(
    "line",
    [
        "c.ServerApp.token = ''",
        'c.IdentityProvider.token = ""',
        "jupyter lab --ServerApp.token=",
        "jupyter lab --NotebookApp.token ''",
        "      - JUPYTER_TOKEN=",
        '      JUPYTER_TOKEN: ""',
        "  JUPYTER_TOKEN:",
    ],
)
def test_policy_catches_empty_tokens(line):
    assert EMPTY_TOKEN.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "if token:",
        "c.IdentityProvider.token = token_from_env",
        "JUPYTER_TOKEN: ${JUPYTER_TOKEN:?set JUPYTER_TOKEN}",
        'if [ -z "${JUPYTER_TOKEN:-}" ]; then',
    ],
)
def test_policy_leaves_real_tokens_alone(line):
    assert not EMPTY_TOKEN.search(line)


# --- the build context -----------------------------------------------------------------------


def test_dockerignore_lets_in_everything_the_dockerfile_copies():
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context should be an allow-list"
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword != "COPY":
            continue
        sources = [word for word in arguments.split() if not word.startswith("--")][:-1]
        for source in sources:
            assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


# --- linters ---------------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile():
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_the_shell_scripts():
    shellcheck = require_tool("shellcheck")
    scripts = sorted(DOCKER.glob("*.sh"))
    assert scripts
    result = subprocess.run(
        [shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_matches_the_compose_spec():
    check_jsonschema = require_tool("check-jsonschema")
    result = subprocess.run(
        [check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_reserves_the_gpu_and_mounts_the_book():
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    assert set(services) >= {"lab", "ssh"}
    for service in services.values():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices
        assert "../book:/workspace/book" in service["volumes"]
    assert services["lab"]["ports"] == ["127.0.0.1:8888:8888"]
    assert services["ssh"]["ports"] == ["127.0.0.1:2222:2222"]


# --- the entrypoint --------------------------------------------------------------------------


def run_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if key != "JUPYTER_TOKEN"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **env},
    )


@pytest.mark.parametrize("token", [None, ""])
def test_entrypoint_refuses_lab_without_a_token(token):
    env = {} if token is None else {"JUPYTER_TOKEN": token}
    result = run_entrypoint("lab", **env)
    assert result.returncode == 2
    assert "JUPYTER_TOKEN is empty or unset" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--ServerApp.token="],
        ["--IdentityProvider.token=''"],
        ["--ServerApp.token", ""],
        ["--allow-root"],
        ["--ServerApp.allow_root=True"],
    ],
)
def test_entrypoint_refuses_unsafe_jupyter_options(args):
    result = run_entrypoint("lab", *args, JUPYTER_TOKEN=secrets.token_hex(8))
    assert result.returncode == 2, result.stderr
    assert "refusing" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can show the refusal to run as root")
@pytest.mark.parametrize("command", [["lab"], ["ssh"]])
def test_entrypoint_refuses_to_serve_as_root(command):
    result = run_entrypoint(*command, JUPYTER_TOKEN=secrets.token_hex(8))
    assert result.returncode == 1
    assert "as root" in result.stderr


def test_entrypoint_usage_and_one_shot_commands():
    no_args = run_entrypoint()
    assert no_args.returncode == 2 and "usage:" in no_args.stderr
    assert "chapters execute --shard" in run_entrypoint("help").stdout
    unknown = run_entrypoint("no-such-command-here")
    assert unknown.returncode == 127
    assert "unknown command 'no-such-command-here'" in unknown.stderr
    once = run_entrypoint("echo", "ran", "once")
    assert once.returncode == 0 and once.stdout == "ran once\n"


# --- sshd with the shipped config ------------------------------------------------------------


@pytest.fixture
def sshd_dir() -> Iterator[Path]:
    """A private directory the unprivileged sshd can read (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="chapters-sshd-"))
    try:
        if os.geteuid() == 0:
            os.chown(path, UNPRIVILEGED.pw_uid, UNPRIVILEGED.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_key(path: Path) -> None:
    ssh_keygen = require_tool("ssh-keygen")
    subprocess.run(
        as_unprivileged([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(path)]),
        check=True,
        timeout=30,
    )


def sshd_command(sshd_dir: Path, *extra: str) -> list[str]:
    """sshd on a copy of the shipped config in ``sshd_dir``: the unprivileged user may not be
    able to read the checkout (a clone under a 0700 home or ``mktemp -d`` folder)."""
    sshd = require_tool("sshd")
    config = sshd_dir / "sshd_config"
    shutil.copyfile(SSHD_CONFIG, config)
    if os.geteuid() == 0:
        os.chown(config, UNPRIVILEGED.pw_uid, UNPRIVILEGED.pw_gid)
    return as_unprivileged(
        [
            sshd,
            "-f",
            str(config),
            "-o",
            f"HostKey={sshd_dir / 'host_key'}",
            "-o",
            f"PidFile={sshd_dir / 'sshd.pid'}",
            *extra,
        ]
    )


def test_sshd_accepts_the_config(sshd_dir):
    make_key(sshd_dir / "host_key")
    result = subprocess.run(
        sshd_command(sshd_dir, "-t"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    # The only complaint: the image's host key path, which the entrypoint fills at start.
    other = [
        line
        for line in result.stderr.splitlines()
        if "/var/lib/chapters-sshd/ssh_host_ed25519_key" not in line
    ]
    assert other == []


def test_sshd_effective_settings(sshd_dir):
    make_key(sshd_dir / "host_key")
    result = subprocess.run(
        sshd_command(sshd_dir, "-T"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    effective = {}
    for line in result.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        effective.setdefault(keyword, value)
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["pubkeyauthentication"] == "yes"
    assert effective["authenticationmethods"] == "publickey"
    assert effective["usepam"] == "no"
    assert effective["port"] == "2222"
    assert effective["x11forwarding"] == "no"
    assert effective["authorizedkeysfile"] == "/var/lib/chapters-sshd/authorized_keys"


def test_sshd_logs_in_with_a_key_and_refuses_passwords(sshd_dir, tmp_path):
    ssh = require_tool("ssh")
    make_key(sshd_dir / "host_key")
    client_key = tmp_path / "id_ed25519"
    subprocess.run(
        [require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)],
        check=True,
        timeout=30,
    )
    authorized = sshd_dir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:
        os.chown(authorized, UNPRIVILEGED.pw_uid, UNPRIVILEGED.pw_gid)
    authorized.chmod(0o600)
    port = free_port()
    with (tmp_path / "sshd.log").open("w") as log:
        server = subprocess.Popen(
            sshd_command(
                sshd_dir,
                "-D",
                "-e",
                "-o",
                f"Port={port}",
                "-o",
                "ListenAddress=127.0.0.1",
                "-o",
                f"AuthorizedKeysFile={authorized}",
                # The temp dir sits under world-writable /tmp, which StrictModes rejects.
                "-o",
                "StrictModes=no",
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_for_port(port, server)
        user = UNPRIVILEGED.pw_name if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        client = [
            ssh,
            "-v",
            "-F",
            "/dev/null",
            "-p",
            str(port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ]
        with_key = subprocess.run(
            [*client, "-i", str(client_key), "-o", "IdentitiesOnly=yes", f"{user}@127.0.0.1"]
            + ["true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        server_log = (tmp_path / "sshd.log").read_text
        assert "Authenticated to 127.0.0.1" in with_key.stderr, with_key.stderr + server_log()
        without_key = subprocess.run(
            [*client, "-o", "PubkeyAuthentication=no", f"{user}@127.0.0.1", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert without_key.returncode == 255
        assert "Permission denied (publickey)" in without_key.stderr, without_key.stderr
    finally:
        stop(server)


# --- Jupyter with the shipped config ---------------------------------------------------------

SAMPLE_CHAPTER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Title

Some text before the code.

```{code-cell} ipython3
x = 1
```
"""


def start_jupyter(tmp_path: Path, token: str) -> tuple[subprocess.Popen, int]:
    require_module("jupyter_server")
    require_module("jupytext")
    book = tmp_path / "book"
    book.mkdir()
    (book / "chapter.md").write_text(SAMPLE_CHAPTER, encoding="utf-8")
    (book / "helper.py").write_text("x = 1\n", encoding="utf-8")
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--config={JUPYTER_CONFIG}",
        # The image listens on 0.0.0.0 inside its container; a test stays on loopback.
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={book}",
    ]
    if os.geteuid() == 0:
        # CI runs the tests as root; the image itself runs Jupyter as uid 1000.
        command.append("--ServerApp.allow_root=True")
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=book)
    log.close()
    try:
        wait_for_port(port, server)
    except AssertionError:
        stop(server)
        raise AssertionError((tmp_path / "jupyter.log").read_text()) from None
    return server, port


@pytest.fixture
def jupyter(tmp_path) -> Iterator[tuple[int, str]]:
    token = secrets.token_hex(16)
    server, port = start_jupyter(tmp_path, token)
    try:
        yield port, token
    finally:
        stop(server)


@pytest.fixture
def jupyter_without_token(tmp_path) -> Iterator[int]:
    server, port = start_jupyter(tmp_path, "")
    try:
        yield port
    finally:
        stop(server)


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_jupyter_opens_a_myst_chapter_as_a_notebook(jupyter):
    port, token = jupyter
    status, body = get(port, "/api/contents/chapter.md?type=notebook&content=1", token)
    assert status == 200, body
    model = json.loads(body)
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert [cell["source"] for cell in code] == ["x = 1"]
    assert any("# Title" in cell["source"] for cell in cells if cell["cell_type"] == "markdown")
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"


def test_jupyter_keeps_python_files_as_text(jupyter):
    # jupytext alone would open `.py` as a notebook: this shows the shipped config is in force.
    port, token = jupyter
    status, body = get(port, "/api/contents/helper.py?content=1", token)
    assert status == 200, body
    assert json.loads(body)["type"] == "file"


def test_jupyter_refuses_requests_without_the_token(jupyter):
    port, token = jupyter
    status, _ = get(port, "/api/contents/chapter.md?type=notebook&content=1")
    assert status in (401, 403)
    status, _ = get(port, "/api/contents/chapter.md", "not-" + token)
    assert status in (401, 403)


def test_jupyter_with_an_empty_token_still_requires_one(jupyter_without_token):
    # The config must never turn JUPYTER_TOKEN="" into "no authentication".
    status, _ = get(jupyter_without_token, "/api/contents")
    assert status in (401, 403)


def test_the_image_carries_the_torch_release_ci_tests():
    """Issue 12: the container's torch is the release CI tests on CPU (a result verified in the
    container and one verified by CI then differ only by device): the base image's tag, the
    TORCH_VERSION the build checks the image's torch against, and the constraints file agree."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    image = next(arguments for keyword, arguments in instructions if keyword == "FROM")
    tag = image.split("@")[0].split(":", 1)[1]
    match = re.fullmatch(r"(\d+\.\d+\.\d+)-cuda(\d+\.\d+)-cudnn\d+-runtime", tag)
    assert match, f"not a pytorch/pytorch release runtime tag: {tag}"
    args = dict(
        arguments.partition("=")[::2] for keyword, arguments in instructions if keyword == "ARG"
    )
    constraints = (ROOT / ".ci" / "constraints-cpu.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^torch==(\S+)$", constraints, re.MULTILINE)
    assert pinned, "the constraints file pins no torch"
    assert match[1] == args["TORCH_VERSION"] == pinned[1]
    # the build compares the image's torch with TORCH_VERSION, as a CUDA build
    assert 'grep -E "^${TORCH_VERSION}\\+cu[0-9]+ [0-9.]+$"' in DOCKERFILE.read_text()
