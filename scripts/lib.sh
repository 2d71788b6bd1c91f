# Shared helpers for scripts/test and scripts/fuzz. Source it; do not run it.
#
# Every ensure_* function is idempotent: it returns at once when its tool is
# already there and installs it otherwise. To add a tool the tests need
# (redis-server, say), write one more such function with `ensure_apt` and
# call it from scripts/test's ensure_test_tools.
#
# Under CI=true a tool that is missing and cannot be installed is a failure;
# elsewhere it is a warning (and the tests that need it fail or say why),
# except for tools the script itself cannot do without.

# Progress lines go to stderr so they interleave with cargo's output.
step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

have() { command -v "$1" >/dev/null 2>&1; }

# Seconds since the script started, for the progress lines.
elapsed() { printf '%ss' "$SECONDS"; }

# Runs as root, or through sudo when there is one.
as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        return 1
    fi
}

APT_UPDATED=0

# apt_install PACKAGE...: `apt-get update` once per script run, then install.
apt_install() {
    have apt-get || return 1
    if [[ "$APT_UPDATED" == 0 ]]; then
        note "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    note "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" || return 1
}

# missing WHAT WHY: a failure under CI, a warning elsewhere.
missing() {
    if is_ci; then
        die "$1 is missing and could not be installed ($2)"
    fi
    printf 'warning: %s is missing and could not be installed (%s)\n' "$1" "$2" >&2
}

# ensure_apt COMMAND PACKAGE: the command, from the Debian package if missing.
ensure_apt() {
    have "$1" && return 0
    step "installing $2 (for $1)"
    apt_install "$2" && have "$1" && return 0
    missing "$1" "apt-get install $2"
}

# ensure_python_cryptography: python3 with the `cryptography` package (from
# PyPI when missing), for spec/vectors/check.py.
ensure_python_cryptography() {
    have python3 || { missing python3 "install python3"; return 0; }
    python3 -c 'import cryptography' 2>/dev/null && return 0
    step "installing the Python package cryptography (for spec/vectors/check.py)"
    python3 -m pip install --quiet cryptography && return 0
    missing "python3 package cryptography" "python3 -m pip install cryptography"
}

# ensure_python_idna: python3 with the `idna` package (IDNA UTS #46; the
# stdlib's encodings.idna is IDNA 2003), for the URLs of clarified.json in
# spec/vectors/check.py.
ensure_python_idna() {
    have python3 || { missing python3 "install python3"; return 0; }
    python3 -c 'import idna' 2>/dev/null && return 0
    step "installing the Python package idna (for spec/vectors/check.py)"
    python3 -m pip install --quiet idna && return 0
    missing "python3 package idna" "python3 -m pip install idna"
}

ensure_cargo() {
    have cargo || die "cargo is not installed (install Rust with rustup first)"
}

# cargo-nextest runs the tests when present; without it scripts/test falls
# back to `cargo test`, so it is not installed here.
have_nextest() { cargo nextest --version >/dev/null 2>&1; }

ensure_cargo_fuzz() {
    cargo fuzz --version >/dev/null 2>&1 && return 0
    step "installing cargo-fuzz (cargo install cargo-fuzz --locked, about a minute)"
    cargo install cargo-fuzz --locked && return 0
    die "cargo-fuzz is missing and could not be installed (cargo install cargo-fuzz --locked)"
}
