#!/bin/sh
# Entrypoint of the Derive & Verify image: `lab`, `ssh`, or any other command run once.
set -eu

SSHD_CONFIG=/etc/chapters/sshd_config
SSHD_STATE=/var/lib/chapters-sshd

usage() {
    cat <<'EOF'
usage: docker run [docker options] IMAGE COMMAND [ARGS...]

  lab [JUPYTER ARGS...]   JupyterLab on :8888 in /workspace/book; needs -e JUPYTER_TOKEN=...
                          (publish it on the host as -p 127.0.0.1:8888:8888)
  ssh                     sshd on :2222, public keys only; keys from -e SSH_AUTHORIZED_KEYS=...
                          and/or a file mounted at $SSH_AUTHORIZED_KEYS_FILE
                          (default /etc/chapters/authorized_keys)
  chapters ARGS...        the chapters CLI once, e.g. chapters execute --shard 1/3 --cache /cache
  COMMAND [ARGS...]       any other command, run once (e.g. bash, python, nvidia-smi)
  help                    this message
EOF
}

die() {
    printf 'entrypoint: %s\n' "$1" >&2
    exit "${2:-1}"
}

refuse_root() {
    if [ "$(id -u)" = 0 ]; then
        die "refusing to run '$1' as root; run the image as its own user (uid 1000)"
    fi
}

# An empty token switches Jupyter's authentication off: refuse it however it is quoted.
refuse_empty_token() {
    case "$1" in
        "" | "''" | '""') die "refusing an empty Jupyter token on the command line" 2 ;;
    esac
}

start_lab() {
    if [ -z "${JUPYTER_TOKEN:-}" ]; then
        die "JUPYTER_TOKEN is empty or unset; refusing to start JupyterLab without a token.
  Pass one, e.g. -e JUPYTER_TOKEN=\"\$(openssl rand -hex 32)\"" 2
    fi
    previous=""
    for arg in "$@"; do
        case "$arg" in
            *allow?root*) die "refusing Jupyter option '$arg': the server never runs as root" 2 ;;
            *[Tt]oken=*) refuse_empty_token "${arg#*[Tt]oken=}" ;;
        esac
        case "$previous" in
            --*[Tt]oken) refuse_empty_token "$arg" ;;
        esac
        previous="$arg"
    done
    refuse_root lab
    # The token travels in the environment (read by /etc/jupyter/jupyter_server_config.py),
    # never on the command line where `ps` would show it.
    exec jupyter lab "$@"
}

collect_authorized_keys() {
    keys_file="${SSH_AUTHORIZED_KEYS_FILE:-/etc/chapters/authorized_keys}"
    target="$SSHD_STATE/authorized_keys"
    : >"$target"
    chmod 600 "$target"
    if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
        printf '%s\n' "$SSH_AUTHORIZED_KEYS" >>"$target"
    fi
    # A mounted file may belong to any host uid; copying it satisfies sshd's StrictModes.
    if [ -r "$keys_file" ]; then
        cat "$keys_file" >>"$target"
    fi
    if ! grep -q '^[[:space:]]*[^#[:space:]]' "$target"; then
        die "no SSH public key: set SSH_AUTHORIZED_KEYS or mount a key file at $keys_file" 2
    fi
}

start_ssh() {
    if [ "$#" -gt 0 ]; then
        die "'ssh' takes no arguments" 2
    fi
    refuse_root ssh
    umask 077
    collect_authorized_keys
    # Host keys are made per container, never shipped in the image.
    if [ ! -f "$SSHD_STATE/ssh_host_ed25519_key" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "derive-and-verify container" \
            -f "$SSHD_STATE/ssh_host_ed25519_key"
    fi
    printf 'entrypoint: host key fingerprint: %s\n' \
        "$(ssh-keygen -l -f "$SSHD_STATE/ssh_host_ed25519_key.pub")"
    exec /usr/sbin/sshd -D -e -f "$SSHD_CONFIG"
}

if [ "$#" -eq 0 ]; then
    usage >&2
    exit 2
fi

subcommand="$1"
shift
case "$subcommand" in
    lab)
        start_lab "$@"
        ;;
    ssh)
        start_ssh "$@"
        ;;
    help | -h | --help)
        usage
        ;;
    -*)
        usage >&2
        die "unknown option '$subcommand'" 2
        ;;
    *)
        if ! command -v "$subcommand" >/dev/null 2>&1; then
            usage >&2
            die "unknown command '$subcommand'" 127
        fi
        exec "$subcommand" "$@"
        ;;
esac
