#!/usr/bin/env bash
# Make a docker daemon answer on this machine and give it the images the tests and the
# compatibility corpus name, built locally from busybox-static (CI has no registry to pull from).
# Also installs what the pull tests start themselves on loopback: Debian's docker-registry (the
# CNCF distribution registry) and htpasswd (apache2-utils) for its basic auth.
# Idempotent: installs, starts and imports only what is missing.
set -euo pipefail

IMAGE=shoal/busybox:latest
TAGS=(busybox:1.37.0 busybox:latest ubuntu:latest)
WAIT_SECONDS=60

die() {
    echo "docker-setup: $*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

# 1. Packages: the daemon, a statically linked busybox to build the image from, and a registry
# with htpasswd for tests/e2e/test_image_pull.py (each test runs its own on a free port).
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
busybox_bin=""
for candidate in /bin/busybox /usr/bin/busybox; do
    # Only a static busybox runs in an image with no libc.
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
        busybox_bin=$candidate
        break
    fi
done
[ -n "$busybox_bin" ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    echo "docker-setup: installing ${need[*]}" >&2
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${need[*]} by hand"
    as_root apt-get update -q || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" \
        || die "apt-get install ${need[*]} failed"
fi
if [ -z "$busybox_bin" ]; then
    for candidate in /bin/busybox /usr/bin/busybox; do
        [ -x "$candidate" ] && busybox_bin=$candidate && break
    done
fi
[ -n "$busybox_bin" ] || die "busybox-static installed but no busybox binary found"

# 2. The daemon: start one if nothing answers on the socket.
if ! docker info >/dev/null 2>&1; then
    echo "docker-setup: starting dockerd (log: /tmp/dockerd.log)" >&2
    as_root sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &' || die "could not start dockerd"
    deadline=$((SECONDS + WAIT_SECONDS))
    until docker info >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            tail -n 20 /tmp/dockerd.log >&2 2>/dev/null || true
            die "dockerd did not answer within ${WAIT_SECONDS}s (see /tmp/dockerd.log)"
        fi
        sleep 1
    done
fi

# 3. Images: a busybox rootfs imported once, tagged under every name the corpus uses.
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "docker-setup: building $IMAGE from $busybox_bin" >&2
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    cp "$busybox_bin" "$root/bin/busybox"
    # Link every applet into /bin (the name "busybox" itself is the binary, not a link).
    for applet in $("$busybox_bin" --list); do
        [ "$applet" = busybox ] && continue
        ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["sh"]' - "$IMAGE" >/dev/null || die "docker import failed"
fi
for tag in "${TAGS[@]}"; do
    docker tag "$IMAGE" "$tag" || die "docker tag $tag failed"
done
out=$(docker run --rm --network none "$IMAGE" sh -c 'echo ok') || die "test container did not run"
[ "$out" = ok ] || die "test container printed '$out', not 'ok'"
command -v docker-registry >/dev/null 2>&1 || die "docker-registry installed but not on PATH"
echo "docker-setup: dockerd ready; images: $IMAGE ${TAGS[*]}; docker-registry and htpasswd" >&2
