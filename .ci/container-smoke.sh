#!/usr/bin/env bash
# The image and the compose stack, built and run for real with podman (docs/service.md, "Containers:
# what CI proves and what it cannot"). As root, after .ci/install (the ired-dcd client of .venv submits
# the jobs). Idempotent; podman's image store is the cache between runs.
#
#   1. a Python 3.11 base image from Debian's mirror (no registry is reachable here), once per machine
#   2. the project image (CPU torch from a local wheel) and Debian stand-ins for postgres and redis
#   3. the image alone: non-root, read-only root with /data the only volume, /health, a tiny job,
#      SIGTERM answered within the grace period, size under 1.5 GB
#   4. docker-compose.yml through podman's Docker API: postgres, redis, migrate, api, worker-cpu; a
#      tiny job through the API to a containerised worker; down, with nothing left behind
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run .ci/container-smoke.sh as root" >&2; exit 1; }

export CONTAINERS_CONF="$PWD/.ci/containers.conf"
BASE=localhost/ired-python-base:3.11-bookworm
TAG=ci
IMAGE=localhost/ired-dcd:$TAG
PROJECT=iredsmoke
PORT=18471
MAX_IMAGE_BYTES=1500000000
STOP_GRACE_S=10 # docker's and podman's default before SIGKILL
CLIENT=.venv/bin/ired-dcd
TINY=(--seeds "0,1" --set train_steps=40 --set batch_size=16 --set hidden_dim=32 --set time_dim=16 --set rank=4
    --set val_size=64 --set eval_batch_size=64 --set eval_every=20)
CODE_VERSION="git:$(git rev-parse --short=12 HEAD)"
WORK=$(mktemp -d)
started=$SECONDS

step() { echo "== container-smoke [$((SECONDS - started)) s]: $*"; }
fail() { echo "container-smoke: FAILED: $*" >&2; exit 1; }
quiet() { "$@" 2> >(grep -v "failed to connect to syslog" >&2); }

COMPOSE=(env "DOCKER_HOST=unix://$WORK/podman.sock" docker-compose -p "$PROJECT" --env-file "$WORK/compose.env"
    -f docker-compose.yml --profile cpu)

cleanup() {
    set +e
    [ -S "$WORK/podman.sock" ] && "${COMPOSE[@]}" down -v --timeout 30 >/dev/null 2>&1
    quiet podman rm -f ired-smoke >/dev/null 2>&1
    quiet podman volume rm -f ired-smoke-data >/dev/null 2>&1
    for pid in "${HEALTH_TICKER:-}" "${API_SERVICE:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_for_health() { # URL SECONDS
    for _ in $(seq "$2"); do
        curl -sf -m 5 "$1/health" >/dev/null && return 0
        sleep 1
    done
    fail "$1/health did not answer within $2 s"
}

tiny_job() { # URL TOKEN: a tiny Q-204 job over two seeds to the end, its runs recording the commit built
    "$CLIENT" submit q204 "${TINY[@]}" --server "$1" --token "$2" --wait | tee "$WORK/job.txt"
    grep -q "succeeded" "$WORK/job.txt" || fail "the tiny job did not succeed"
    job=$(sed -n 's/^job \([0-9]*\) succeeded.*/\1/p' "$WORK/job.txt")
    curl -sf -H "Authorization: Bearer $2" "$1/jobs/$job" | grep -q "\"code_version\":\"$CODE_VERSION\"" ||
        fail "the runs do not record the code version $CODE_VERSION"
}

step "1. base image $BASE"
if ! podman image exists "$BASE"; then
    rootfs="$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        http://deb.debian.org/debian >"$WORK/debootstrap.log" || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    chroot "$rootfs" python3 -m venv /opt/python # pip on PATH, outside Debian's externally managed Python
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null
fi

step "2. images: $IMAGE (CPU torch from a local wheel) and the postgres and redis stand-ins"
# the CPU torch wheel that pip finds on this machine (its pip settings name a local wheel folder)
ls wheels/torch-*.whl >/dev/null 2>&1 || .venv/bin/pip download -q --no-deps torch==2.13.0 -d wheels
build() { quiet podman build --network host --build-arg BASE_IMAGE="$BASE" \
    --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt "$@" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log"; fail "podman build $*"; }; }
build --build-arg TORCH_VARIANT=cpu --build-arg TORCH_VERSION=2.13.0 --build-arg TORCH_FROM_WHEELS=1 \
    --build-arg CODE_VERSION="$CODE_VERSION" -t "$IMAGE" .
for service in postgres redis; do
    build -t "localhost/ired-$service-debian:$TAG" -f "docker/debian/$service.Dockerfile" docker/debian
done

step "3. the image alone"
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
echo "image size: $size bytes ($((size / 1000000)) MB; limit $((MAX_IMAGE_BYTES / 1000000)) MB)"
[ "$size" -lt "$MAX_IMAGE_BYTES" ] || fail "the image is $size bytes"
[ "$(podman image inspect "$IMAGE" --format '{{.Config.User}}')" = ired ] || fail "the image's user is not ired"
[ "$(quiet podman run --rm "$IMAGE" id -u)" = 10001 ] || fail "the image runs as root"
# read-only root: /data (the volume) and /tmp (scratch in memory) are all it may write
quiet podman run -d --name ired-smoke --read-only --read-only-tmpfs=false --tmpfs /tmp \
    -v ired-smoke-data:/data -e IRED_AUTH_REQUIRED=true -p "127.0.0.1:$PORT:8000" "$IMAGE" >/dev/null
wait_for_health "http://127.0.0.1:$PORT" 120
token=$(quiet podman exec ired-smoke ired-dcd users add smoke | head -1)
tiny_job "http://127.0.0.1:$PORT" "$token"
quiet podman exec ired-smoke sh -c 'touch /app/x' 2>/dev/null && fail "the image's root file system is writable"
signalled=$(date +%s.%N)
quiet podman kill --signal TERM ired-smoke >/dev/null
timeout $((STOP_GRACE_S + 30)) podman wait ired-smoke >/dev/null 2>&1 || fail "no exit after SIGTERM"
finished=$(date -d "$(podman inspect ired-smoke --format '{{.State.FinishedAt}}' | sed 's/ UTC$//')" +%s.%N)
code=$(podman inspect ired-smoke --format '{{.State.ExitCode}}')
stopped_in=$(python3 -c "print(round($finished - $signalled, 2))")
echo "SIGTERM: the server exited ${stopped_in} s after the signal, exit code $code (grace period $STOP_GRACE_S s)"
[ "$code" = 143 ] || [ "$code" = 0 ] || fail "exit code $code after SIGTERM"
python3 -c "import sys; sys.exit($stopped_in >= $STOP_GRACE_S)" || fail "SIGTERM took ${stopped_in} s"
quiet podman rm ired-smoke >/dev/null

step "4. the compose stack through podman's Docker API"
cat >"$WORK/compose.env" <<EOF
POSTGRES_PASSWORD=smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
IRED_IMAGE_TAG=$TAG
POSTGRES_IMAGE=localhost/ired-postgres-debian:$TAG
REDIS_IMAGE=localhost/ired-redis-debian:$TAG
IRED_API_PORT=$PORT
EOF
podman system service --time=0 "unix://$WORK/podman.sock" 2>/dev/null &
API_SERVICE=$!
for _ in $(seq 30); do [ -S "$WORK/podman.sock" ] && break; sleep 0.5; done
# podman runs health checks from systemd timers; with no systemd here, this loop stands in for them
(while sleep 2; do
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
        podman healthcheck run "$id" >/dev/null 2>&1 || true # unhealthy is podman's to record, not an error here
    done
done) &
HEALTH_TICKER=$!
"${COMPOSE[@]}" down -v --timeout 30 >/dev/null 2>&1 || true # what an interrupted run left
timeout 600 "${COMPOSE[@]}" up -d --no-build postgres redis migrate api worker-cpu
wait_for_health "http://127.0.0.1:$PORT" 120
curl -s "http://127.0.0.1:$PORT/health" | tee "$WORK/health.json" && echo
grep -q '"mode":"lab-server"' "$WORK/health.json" || fail "the api is not in lab-server mode"
token=$("${COMPOSE[@]}" exec -T api ired-dcd users add smoke | head -1)
tiny_job "http://127.0.0.1:$PORT" "$token"
"${COMPOSE[@]}" logs --no-color worker-cpu | grep -q "Task ired.train_runs.* succeeded" ||
    fail "the containerised worker did not run the job"
down_started=$SECONDS
timeout 300 "${COMPOSE[@]}" stop --timeout 120 api worker-cpu
for service in api worker-cpu; do
    code=$(podman inspect "${PROJECT}_${service}_1" --format '{{.State.ExitCode}}')
    echo "$service stopped with exit code $code"
    [ "$code" != 137 ] || fail "$service was killed at the end of its grace period"
done
timeout 300 "${COMPOSE[@]}" down -v --timeout 30
echo "stack down in $((SECONDS - down_started)) s"
left=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "containers left behind: $left"
step "passed"
