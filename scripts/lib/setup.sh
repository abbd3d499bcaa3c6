# Set-up helpers shared by scripts/test and the benchmark scripts in bench/.
# Sourced, not run. Every installer says what it installs and why, and stops
# the script (exit 1) when it cannot: nothing is skipped quietly.

say() { echo "${SETUP_WHO:-setup}: $*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

# PATH without relative entries (empty, `.`, `bin`): a command found through
# one of them would be a file of whatever directory we happen to be in.
safe_path() {
  local entry out=""
  local IFS=:
  for entry in $PATH; do
    case "$entry" in
      /*) out="${out:+$out:}$entry" ;;
    esac
  done
  PATH="$out"
  export PATH
}

# `have CMD`: CMD is on PATH, looked up from / so nothing in the tree counts.
have() { (cd / && command -v "$1" >/dev/null 2>&1); }

# `apt_install WHY PACKAGE...`: installs Debian packages, once per script.
apt_updated=no
apt_install() {
  local why=$1
  shift
  say "installing $* with apt-get ($why)"
  if [ "$(id -u)" != 0 ] && ! have sudo; then
    fail "apt-get needs root to install $* ($why)"
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ "$apt_updated" = no ]; then
    $sudo apt-get update -qq || fail "apt-get update (needed to install $*)"
    apt_updated=yes
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    fail "apt-get install $* ($why)"
}

# `need_commands WHY PACKAGES -- CMD...`: installs PACKAGES unless every CMD
# is on PATH, then checks that they are.
need_commands() {
  local why=$1 packages=$2
  shift 3
  local cmd missing=""
  for cmd in "$@"; do have "$cmd" || missing="$missing $cmd"; done
  [ -z "$missing" ] && return 0
  # shellcheck disable=SC2086 # a list of package names
  apt_install "$why; missing:$missing" $packages
  for cmd in "$@"; do have "$cmd" || fail "$cmd is still not on PATH after installing $packages"; done
}

# `python_env DIR REQUIREMENTS MODULE...`: makes (or reuses) a virtual
# environment in DIR with exactly the pins of REQUIREMENTS, checks that each
# MODULE imports (isolated from the working directory, so no directory of the
# tree can stand in for a package), and exports PYTHON.
python_env() {
  local dir=$1 requirements=$2
  shift 2
  local modules
  modules=$(
    IFS=,
    echo "$*"
  )
  if ! have python3; then
    apt_install "Python 3 for the test oracles" python3 python3-venv
  fi
  local base
  base=$(cd / && command -v python3)
  local stamp="$dir/.requirements.sha256"
  local want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] ||
    ! (cd / && "$dir/bin/python" -I -c "import $modules") 2>/dev/null; then
    say "making the Python environment $dir from $requirements (with $base)"
    rm -rf "$dir"
    if ! (cd / && "$base" -I -m venv "$dir") 2>/dev/null; then
      # Debian's own Python has venv in a package of its own.
      apt_install "python3 -m venv for the test environment" python3-venv
      (cd / && "$base" -I -m venv "$dir") || fail "python3 -m venv $dir"
    fi
    (cd / && "$dir/bin/python" -I -m pip install --quiet --disable-pip-version-check \
      --no-input --require-virtualenv -r "$requirements") ||
      fail "pip install -r $requirements into $dir"
    echo "$want" >"$stamp"
  fi
  (cd / && "$dir/bin/python" -I -c "import $modules") ||
    fail "$dir/bin/python cannot import $* after installing $requirements"
  PYTHON="$dir/bin/python"
  export PYTHON
  local versions
  versions=$(cd / && "$PYTHON" -I -c '
import importlib.metadata as m, platform, sys
names = sys.argv[1:]
print(platform.python_version() + ": " + ", ".join(n + " " + m.version(n) for n in names))
' "$@") || fail "$PYTHON cannot report the versions of $*"
  say "Python $PYTHON ($versions)"
}
