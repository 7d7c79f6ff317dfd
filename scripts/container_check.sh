#!/usr/bin/env bash
# Builds the three images of docker/ and smoke-tests two of them on this machine, where no Docker
# engine runs and no image registry can be reached (not in CI: it takes many minutes).
#
#   bash scripts/container_check.sh [base|build [IMAGE...]|smoke|sizes|all]   (default: all)
#
# base   bootstrap a Debian bookworm base with Python 3.11 once (debootstrap + podman import),
#        cached as $BASE_IMAGE; the official python image cannot be pulled here
# build  podman build --isolation chroot of gateway, worker-cpu and worker-gpu from that base
#        (--build-arg BASE_IMAGE=...); pip reaches PyPI, plus this machine's local indexes
# smoke  a throwaway Redis on 127.0.0.1, the gateway and a CPU worker started from their images'
#        filesystems with `buildah run --isolation chroot` (host network: `podman run` is refused
#        by this sandbox), one task submitted through the gateway and awaited until `succeeded`
# sizes  the images' sizes
#
# Needs: podman, buildah, debootstrap (apt), redis-server, curl, python3. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-localhost/mgw-debian-base:bookworm}
TAG=${TAG:-dev}
CACHE=${MGW_CONTAINER_CACHE:-/var/cache/mgw-container}
SMOKE_PORT=${SMOKE_PORT:-18000}
REDIS_PORT=${REDIS_PORT:-16399}
stage=${1:-all}

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

bootstrap_base() {
  if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE is cached"
    return
  fi
  local rootfs="$CACHE/rootfs"
  mkdir -p "$CACHE"
  rm -rf "$rootfs"
  log "debootstrap bookworm into $rootfs"
  # minbase + what the official python:3.11-slim image gives the Dockerfiles: python3.11 with
  # venv/ensurepip, CA certificates. No compiler: every dependency ships a manylinux wheel.
  debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  log "podman import -> $BASE_IMAGE"
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# The machine's pip configuration (local wheel folders and indexes beside PyPI) is lent to the
# build steps, so the CPU torch build (`+cpu`, not on PyPI) resolves here as it does on a machine
# that reaches the PyTorch index the Dockerfiles name.
# Its CA bundle goes along too: where PyPI is reached through a TLS-inspecting proxy, the base
# image's own bundle does not trust it.
pip_mounts=()
for path in /etc/pip.conf /etc/xdg/pip /opt/wheels /opt/pypi /opt/pypi-more \
  /etc/ssl/certs/ca-certificates.crt; do
  [ -e "$path" ] && pip_mounts+=(--volume "$path:$path:ro")
done
local_index=""
for index in /opt/pypi/simple /opt/pypi-more/simple; do
  [ -d "$index" ] && local_index+="file://$index "
done

build_image() {
  local name=$1
  shift
  log "building minions-gateway-$name:$TAG"
  podman build --isolation chroot --network host "${pip_mounts[@]}" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "PIP_FIND_LINKS=/opt/wheels" \
    --build-arg "PIP_EXTRA_INDEX_URL=${local_index% }" \
    "$@" -f "docker/$name.Dockerfile" -t "localhost/minions-gateway-$name:$TAG" .
}

build_all() {
  local names=("$@") name
  [ ${#names[@]} -eq 0 ] && names=(gateway worker-cpu worker-gpu)
  for name in "${names[@]}"; do build_image "$name"; done
}

sizes() {
  podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E 'minions-gateway|mgw-debian-base' | sort
}

# --- smoke ---------------------------------------------------------------------------------
containers=()
pids=()
groups=()
smoke_dir=""
cleanup() {
  for group in "${groups[@]}"; do kill -- "-$group" 2>/dev/null || true; done
  for group in "${groups[@]}"; do wait "$group" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  [ -n "$smoke_dir" ] && rm -rf "$smoke_dir"
}

start_from_image() {  # NAME IMAGE LOGFILE ENVFILE CMD... ; runs CMD inside the image's filesystem
  local name=$1 image=$2 logfile=$3 envfile=$4
  shift 4
  local ctr
  ctr=$(buildah from --name "mgw-smoke-$name-$$" "$image")
  containers+=("$ctr")
  local env_args=()
  while IFS= read -r line; do
    [ -n "$line" ] && env_args+=(--env "$line")
  done <"$envfile"
  # The image's own USER (non-root) runs the command, as it would under a container engine.
  # In a session of its own, so that cleanup ends buildah and the command it runs together.
  setsid buildah run --isolation chroot --network host --user 10001:10001 "${env_args[@]}" \
    "$ctr" -- "$@" >"$logfile" 2>&1 &
  groups+=($!)
}

smoke() {
  trap cleanup EXIT
  smoke_dir=$(mktemp -d /tmp/mgw-smoke.XXXXXX)
  log "Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$smoke_dir" >"$smoke_dir/redis.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local admin_key
  admin_key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  cat >"$smoke_dir/gateway.env" <<EOF
MGW_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
MGW_LOCAL_POOL=cpu
MGW_HOST=127.0.0.1
MGW_PORT=$SMOKE_PORT
MGW_ADMIN_KEY=$admin_key
MGW_MI_ENABLED=false
MGW_DATA_DIR=/data
EOF
  cat >"$smoke_dir/worker.env" <<EOF
MGW_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
MGW_WORKER_POOL=cpu
EOF
  log "gateway from minions-gateway-gateway:$TAG (port $SMOKE_PORT, pool cpu)"
  start_from_image gateway "localhost/minions-gateway-gateway:$TAG" "$smoke_dir/gateway.log" \
    "$smoke_dir/gateway.env" minions-gw serve --host 127.0.0.1 --port "$SMOKE_PORT"
  for _ in $(seq 120); do
    curl -fsS "http://127.0.0.1:$SMOKE_PORT/health" >/dev/null 2>&1 && break
    sleep 1
  done
  log "gateway /ready before any worker: $(curl -sS "http://127.0.0.1:$SMOKE_PORT/ready")"
  log "submitting a task before the worker starts (it must wait for the pool, not fail)"
  local task
  task=$(curl -fsS "http://127.0.0.1:$SMOKE_PORT/v1/tasks" \
    -H "Authorization: Bearer $admin_key" -H 'Content-Type: application/json' \
    -d '{"protocol": "local_only", "question": "What is the access code?",
         "documents": [{"name": "note.txt", "text": "The access code is 4817."}]}')
  local task_id
  task_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$task")
  log "task $task_id accepted"
  log "CPU worker from minions-gateway-worker-cpu:$TAG (pool cpu, bundled model)"
  start_from_image worker "localhost/minions-gateway-worker-cpu:$TAG" "$smoke_dir/worker.log" \
    "$smoke_dir/worker.env" minions-gw worker --engine vllm --pool cpu --no-studies
  local status="" started=$SECONDS body=""
  while [ $((SECONDS - started)) -lt 600 ]; do
    body=$(curl -fsS "http://127.0.0.1:$SMOKE_PORT/v1/tasks/$task_id" \
      -H "Authorization: Bearer $admin_key" || true)
    status=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("status",""))' \
      "${body:-{\}}" 2>/dev/null || true)
    case "$status" in succeeded | failed | cancelled) break ;; esac
    sleep 3
  done
  log "gateway /ready with the worker: $(curl -sS "http://127.0.0.1:$SMOKE_PORT/ready")"
  log "task $task_id: $status after $((SECONDS - started)) s"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"status": r.get("status"), "answer": (r.get("result") or {}).get("answer"), "error": r.get("error")})[:400])' "$body" || true
  if [ "$status" != succeeded ]; then
    log "gateway log:"; tail -40 "$smoke_dir/gateway.log"
    log "worker log:"; tail -40 "$smoke_dir/worker.log"
    return 1
  fi
}

case "$stage" in
  base) bootstrap_base ;;
  build) shift; build_all "$@" ;;
  smoke) smoke ;;
  sizes) sizes ;;
  all) bootstrap_base; build_all; smoke; sizes ;;
  *) echo "usage: $0 [base|build|smoke|sizes|all]" >&2; exit 2 ;;
esac
