#!/usr/bin/env bash
# Re-resolve the lock files that CI and the image install from (uv's pip-compatible resolver,
# every wheel hash recorded, so `pip install --require-hashes` refuses anything else):
#
#   requirements/dev.txt    every extra and the dev tools: .ci/run installs it
#   requirements/image.txt  the services' extras only (the Dockerfile's EXTRAS): the image
#
# The image's lock is resolved under the dev lock as a constraint, so the image ships exactly
# the versions CI tested. Pins already in a lock are kept; to move them:
#   deploy/update-locks.sh --upgrade                 # everything
#   deploy/update-locks.sh --upgrade-package lightgbm
# tests/unit/deploy/test_locks.py checks the locks still satisfy pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS=$(sed -n 's/^ARG EXTRAS="\(.*\)"$/\1/p' Dockerfile)
[ -n "$EXTRAS" ] || { echo "no ARG EXTRAS=\"...\" line in the Dockerfile" >&2; exit 1; }
if ! command -v uv >/dev/null; then
  echo "uv is not installed: python3 -m pip install uv" >&2
  exit 1
fi
# The target is the image's: Debian bookworm's python3 (3.11) on x86-64 Linux.
common=(--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes
        --custom-compile-command "deploy/update-locks.sh" --quiet)
extra_args=()
for x in ${EXTRAS//,/ }; do extra_args+=(--extra "$x"); done

uv pip compile pyproject.toml --extra dev "${common[@]}" "$@" -o requirements/dev.txt
uv pip compile pyproject.toml "${extra_args[@]}" -c requirements/dev.txt "${common[@]}" "$@" \
  -o requirements/image.txt
echo "requirements/dev.txt: $(grep -c '^[a-z0-9]' requirements/dev.txt) packages;" \
  "requirements/image.txt: $(grep -c '^[a-z0-9]' requirements/image.txt) (extras: $EXTRAS)"
