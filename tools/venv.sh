# Sourced by run.sh and test.sh: make sure .venv exists and holds the project.
# Re-installs only when api/pyproject.toml changed since the last install, so a
# second run costs nothing.
# Usage: ensure_venv <root> <extras>   (extras: "" or "dev")
#
# The project is installed by uv (a dependency of the project in any case):
# pip puts uv into the new venv, then uv resolves and installs the rest in
# parallel, several times faster than pip on a cold cache. Bytecode is
# compiled at install time, so that no process has to compile the libraries
# it imports (PYTHONDONTWRITEBYTECODE, set on some machines, would make every
# process compile them again).
ensure_venv() {
    local root=$1 extras=$2
    local venv="$root/.venv" python=${BIFROST_PYTHON:-python3}
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
            echo "Python 3.11 or newer is needed (found: $("$python" --version 2>&1))" >&2
            return 1
        }
        echo "Creating $venv" >&2
        "$python" -m venv "$venv"
    fi
    local spec="$root/api" stamp="$venv/.bifrost-installed"
    [ -n "$extras" ] && spec="$root/api[$extras]"
    local want
    want="$extras $(sha256sum < "$root/api/pyproject.toml" | cut -d' ' -f1)"
    # A dev install also satisfies a plain one.
    if [ -f "$stamp" ]; then
        local have; have=$(cat "$stamp")
        if [ "$have" = "$want" ] || { [ -z "$extras" ] && [ "${have#dev }" = "${want# }" ]; }; then
            return 0
        fi
    fi
    echo "Installing the project into $venv" >&2
    if [ ! -x "$venv/bin/uv" ]; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv >&2
    fi
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --compile-bytecode \
        -e "$spec" >&2
    echo "$want" > "$stamp"
}
