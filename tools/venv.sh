# Sourced by run.sh and test.sh: make sure .venv exists and holds the project.
# Re-installs only when api/pyproject.toml changed since the last install, so a
# second run costs nothing.
# Usage: ensure_venv <root> <extras>   (extras: "" or "dev")
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
    want="$extras $(cat "$root/api/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    # A dev install also satisfies a plain one.
    if [ -f "$stamp" ]; then
        local have; have=$(cat "$stamp")
        if [ "$have" = "$want" ] || { [ -z "$extras" ] && [ "${have#dev }" = "${want# }" ]; }; then
            return 0
        fi
    fi
    echo "Installing the project into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$spec" >&2
    echo "$want" > "$stamp"
}
