#!/usr/bin/env bash
# Runs the default test suite.  pytest's exit code 5 ("no tests collected") fails loudly:
# a suite that silently runs nothing must never look green.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
shift || true
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
