#!/usr/bin/env bash
# vnflab in one command. Installs what is missing (idempotent, see scripts/install.sh), then:
#   sudo ./run.sh demo [vnflab demo options]   the three load balancers on the default topology
#   sudo ./run.sh test [pytest options]        the test suite (what CI runs)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo|test) ;;
  *) echo "usage: sudo ./run.sh demo|test [options]" >&2; exit 2 ;;
esac
bash "$HERE/scripts/install.sh"
if [ "$cmd" = demo ]; then
    exec "$HERE/.venv/bin/vnflab" demo "$@"
fi
cd "$HERE"
set +e
"$HERE/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@" tests
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "run.sh: pytest collected no tests (exit 5) for this selection" >&2
    exit 0
fi
exit $rc
