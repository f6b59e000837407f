# Shared by scripts/labctl and scripts/test (sourced, not run). Every step is idempotent and quick
# when its work is already done, so the scripts can run before every use.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LABCTL_VENV:-$REPO/.venv}

say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() {
    [[ $(id -u) == 0 ]] || die "run me as root (sudo $0 $*): labs use network namespaces and system packages"
}

# Install the Debian/Ubuntu packages that are missing (apt-get update only when something is).
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer it here so the install never waits for a person.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The first python3 on PATH that is >= 3.11 (pyenv's on a dev machine, /usr/bin/python3 on Debian 12).
find_python() {
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# A virtualenv in .venv with labctl installed editable (extras in $1, e.g. "[test]"). Reinstalls only
# when pyproject.toml or the extras changed since the last install.
ensure_venv() {
    local extras=${1:-} python stamp want
    python=$(find_python) || {
        ensure_apt python3.11 python3.11-venv
        python=$(find_python) || die "no Python >= 3.11 found or installable"
    }
    want="$(sha256sum "$REPO/pyproject.toml" | cut -c1-16) $extras"
    stamp=$VENV/.labctl-installed
    if [[ -x $VENV/bin/python && -f $stamp ]]; then
        local have
        have=$(cat "$stamp")
        # Up to date, and with the extras asked for (an install with [test] also serves plain use).
        [[ $have == "$want" || (-z $extras && ${have%% *} == "${want%% *}") ]] && return 0
    fi
    if [[ ! -x $VENV/bin/python ]]; then
        say "creating $VENV with $python"
        if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
            # Debian and Ubuntu ship venv's pip bootstrap separately, as pythonX.Y-venv.
            rm -rf "$VENV"
            ensure_apt "python$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
            "$python" -m venv "$VENV"
        fi
    fi
    say "installing labctl$extras into $VENV"
    # pip's output goes to a log, shown only when the install fails.
    if ! "$VENV/bin/python" -m pip install -e "$REPO$extras" >"$VENV/pip.log" 2>&1; then
        cat "$VENV/pip.log" >&2
        die "pip could not install labctl$extras (log above, also in $VENV/pip.log)"
    fi
    echo "$want" >"$stamp"
}
