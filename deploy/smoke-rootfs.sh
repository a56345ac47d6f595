#!/usr/bin/env bash
# Proof of the image without a Docker engine: build a minimal Debian root with debootstrap,
# install into it exactly what the Dockerfile installs (the three lists below; a test holds
# them equal to the Dockerfile's), then run `leadscore worker` in it (chroot, as the image's
# non-root user) against the broker and Redis given, until its /ready answers 200.
#
#   sudo LEADSCORE_KAFKA_BOOTSTRAP=127.0.0.1:9092 LEADSCORE_REDIS_URL=redis://127.0.0.1:6379/0 \
#     deploy/smoke-rootfs.sh [ROOT]
#
# ROOT (default /tmp/leadscore-rootfs) is reused when it already holds a Debian root.
set -euo pipefail

BUILD_PACKAGES="python3 python3-venv python3-pip ca-certificates"
RUNTIME_PACKAGES="python3 libgomp1 ca-certificates"
EXTRAS="postgres,parquet,s3,webhook,api"

ROOT="${1:-/tmp/leadscore-rootfs}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
: "${LEADSCORE_KAFKA_BOOTSTRAP:?set LEADSCORE_KAFKA_BOOTSTRAP to a reachable broker}"
: "${LEADSCORE_REDIS_URL:?set LEADSCORE_REDIS_URL to a reachable Redis}"
[ "$(id -u)" -eq 0 ] || { echo "smoke-rootfs: run as root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "smoke-rootfs: apt-get install debootstrap" >&2; exit 2; }

say() { echo "smoke-rootfs: $*" >&2; }
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

cleanup() {
  [ -n "${WORKER_PID:-}" ] && kill "$WORKER_PID" 2>/dev/null || true
  for m in dev/pts dev sys proc; do umount -l "$ROOT/$m" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ ! -f "$ROOT/etc/debian_version" ]; then
  say "debootstrap bookworm (minbase) into $ROOT ..."
  debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >/dev/null
fi
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

say "build stage: apt-get install $BUILD_PACKAGES"
in_root apt-get update -q >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  $BUILD_PACKAGES $RUNTIME_PACKAGES >/dev/null
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
cp -a "$HERE/pyproject.toml" "$HERE/README.md" "$HERE/leadscore" "$HERE/streamer" \
  "$HERE/features" "$HERE/model" "$HERE/schemas" "$HERE/requirements" "$ROOT/src/"
say "build stage: pip install the lock of '.[$EXTRAS]' (requirements/image.txt) into /opt/leadscore ..."
rm -rf "$ROOT/opt/leadscore"
in_root python3 -m venv /opt/leadscore
# Behind a TLS-inspecting proxy, pip needs the proxy's CA: the host's PIP_CERT bundle, if set.
pip_env=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  cp "$PIP_CERT" "$ROOT/etc/ssl/certs/build-ca-bundle.crt"
  pip_env=(PIP_CERT=/etc/ssl/certs/build-ca-bundle.crt)
fi
in_root env "${pip_env[@]}" /opt/leadscore/bin/pip install -q --no-cache-dir --require-hashes \
  -r /src/requirements/image.txt
in_root env "${pip_env[@]}" /opt/leadscore/bin/pip install -q --no-cache-dir --no-deps /src
# The runtime stage has only the runtime packages: remove what only the build needed.
only_build=$(comm -23 <(tr ' ' '\n' <<<"$BUILD_PACKAGES" | sort) <(tr ' ' '\n' <<<"$RUNTIME_PACKAGES" | sort))
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $only_build >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get autoremove -y -q >/dev/null
in_root getent passwd leadscore >/dev/null || in_root useradd --uid 10001 --home-dir /app --create-home leadscore
mkdir -p "$ROOT/models" && chown 10001 "$ROOT/models"

PORT="${SMOKE_PORT:-6096}"
say "runtime: leadscore worker as uid 10001 (web port $PORT) ..."
chroot --userspec=10001:10001 "$ROOT" /usr/bin/env -i PATH=/opt/leadscore/bin:/usr/bin:/bin \
  HOME=/app LEADSCORE_KAFKA_BOOTSTRAP="$LEADSCORE_KAFKA_BOOTSTRAP" \
  LEADSCORE_REDIS_URL="$LEADSCORE_REDIS_URL" LEADSCORE_MODEL_DIR=/models \
  LEADSCORE_WEB_PORT="$PORT" LEADSCORE_WEB_HOST=127.0.0.1 \
  LEADSCORE_APP_ID="smoke-rootfs-$$" LEADSCORE_TOPIC_PREFIX="smoke$$." \
  leadscore worker >"$ROOT/tmp/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 180); do
  if ! kill -0 "$WORKER_PID" 2>/dev/null; then
    say "the worker exited:"; tail -20 "$ROOT/tmp/worker.log" >&2; exit 1
  fi
  if body=$(python3 -c "import urllib.request,sys; r=urllib.request.urlopen('http://127.0.0.1:$PORT/ready', timeout=2); sys.stdout.write(r.read().decode())" 2>/dev/null); then
    say "/ready answered 200: $body"
    say "python in the root: $(in_root python3 --version); libgomp: $(in_root sh -c 'ls /usr/lib/*/libgomp.so.1')"
    exit 0
  fi
  sleep 1
done
say "the worker was not ready in 180 s:"; tail -20 "$ROOT/tmp/worker.log" >&2
exit 1
