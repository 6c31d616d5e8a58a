#!/usr/bin/env bash
# Exec the worker from any working directory. The worker runs inside
# $STIGMER_AGENT_RUNNER_WORKSPACE (default: this project's directory), so relative paths such as
# the data directory resolve there. Uses the project's .venv when present, else python3 on PATH
# (the container image installs into the system interpreter).
set -euo pipefail
project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="${STIGMER_AGENT_RUNNER_WORKSPACE:-$project_dir}"
if [[ ! -d "$workspace" ]]; then
  echo "run.sh: STIGMER_AGENT_RUNNER_WORKSPACE=$workspace is not a directory" >&2
  exit 2
fi
python="$project_dir/.venv/bin/python"
[[ -x "$python" ]] || python="$(command -v python3)"
cd "$workspace"
exec "$python" "$project_dir/main.py" "$@"
