#!/usr/bin/env bash
# SLICE's test lab: throw-away Debian 12 hosts on this machine, reached over SSH.
#
# usage: lab.sh COMMAND [ARGS]
#   check                   say whether this machine can run the lab (root, tools, namespaces)
#   image                   build and cache the image, the offline apt repo and the lab key (~2 min,
#                           needs http://deb.debian.org); a no-op when a complete image is cached
#   up IDX|auto [a|b]       start host hIDX at 10.200.IDX.2 (IDX 1..250); `auto` picks a free
#                           index in 100..250 and prints it. a = netns + chroot, sshd under tini;
#                           b = systemd-nspawn --boot, a real systemd
#   wait IDX [SECONDS]      until ssh answers as root (b: and systemd is running/degraded)
#   ssh [USER@]IDX [CMD..]  ssh into hIDX with the lab key (root unless USER@ is given)
#   ip IDX                  print the host's address
#   key                     print the path of the lab's private key
#   down IDX                stop hIDX and remove everything it had on this machine
#   downall                 stop every host, sweep leftovers of crashed runs (idempotent)
#   status                  list the hosts this machine runs
#
# Environment: SLICE_LAB (cache and state, default /var/tmp/slice-lab), SLICE_LAB_MIRROR
# (default http://deb.debian.org/debian), SLICE_LAB_OWNER (pid of the process a host belongs
# to; `up auto` may reclaim hosts whose owner has died).
#
# The lab never changes the machine it runs on beyond its own objects: the namespaces
# slicelab-hN, the veths slab-hN (10.200.N.1/24), cgroups named slice-lab/hN and the files in
# $SLICE_LAB. It writes nothing under /etc, no global sysctl, loads no module.
set -Eeuo pipefail
shopt -s nullglob

SELF=$(readlink -f "${BASH_SOURCE[0]}")
LAB=${SLICE_LAB:-/var/tmp/slice-lab}
MIRROR=${SLICE_LAB_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

# Bump when the image recipe changes in a way the recipe hash below cannot see (for example a
# change of a file the build reads). Any change to the build functions already rebuilds.
IMAGE_VERSION=1
BASE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,iproute2,iptables,nftables,sudo,python3,procps,tini
REPO_PACKAGES="auditd rsyslog docker.io curl tree busybox-static apparmor"

IMAGE=$LAB/image          # the finished image: rootfs.tar.zst, repo/, files/, key, stamp
BASE=$LAB/base            # rootfs.tar.zst unpacked: the shared read-only lower layer of every host
STATE=$LAB/state          # one folder per running host
LOCK=$LAB/lock
CG_NAME=slice-lab         # our cgroup folder in each hierarchy
SSH_OPTS=(-F /dev/null -i "$IMAGE/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes
  -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR
  -o ConnectTimeout=5)

# ---------------------------------------------------------------------------------------------
# small helpers

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
  printf 'lab: error: %s\n' "$*" >&2
  exit 1
}
usage() {
  sed -n '4,17p' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need_root() { [ "$(id -u)" = 0 ] || die "the lab needs root (it creates namespaces, veths and mounts)"; }

valid_idx() {
  if ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 250 ]; then
    die "host index must be 1..250, not '$1'"
  fi
}

netns_of() { echo "slicelab-h$1"; }
veth_of() { echo "slab-h$1"; }
ip_of() { echo "10.200.$1.2"; }
gw_of() { echo "10.200.$1.1"; }

# The machine's cgroup2 mount: /sys/fs/cgroup on a unified layout, /sys/fs/cgroup/unified on
# a hybrid one (as on CI, where PID 1 is not systemd). Kind b also needs the v1 name=systemd
# hierarchy when it exists: nspawn puts its container there too.
cg2_root() {
  local d
  for d in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    if [ "$(stat -fc %T "$d" 2>/dev/null)" = cgroup2fs ]; then
      echo "$d"
      return
    fi
  done
  return 1
}
cg_roots() {
  cg2_root || true
  [ "$(stat -fc %T /sys/fs/cgroup/systemd 2>/dev/null)" = cgroupfs ] && echo /sys/fs/cgroup/systemd
  true
}

# Process identity is pid + start time, so that a pid file left by a crash (or a reboot:
# $LAB lives in /var/tmp) never makes us signal an unrelated process that got the same pid.
start_time() {
  local stat rest
  read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo "${20}"
}
# "PID STARTTIME" of the process, or nothing.
proc_id() {
  local t
  t=$(start_time "$1") || return 1
  echo "$1 $t"
}
# True when the "PID STARTTIME" in file $1 is a live (not zombie) process.
recorded_alive() {
  local pid t state
  [ -s "$1" ] || return 1
  read -r pid t <"$1" || return 1
  [ -n "$pid" ] && [ "$(start_time "$pid" 2>/dev/null)" = "$t" ] || return 1
  state=$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || return 1
  [ "$state" != Z ]
}

# One lock for the short critical sections (image build, base unpack, index allocation). The
# descriptor is closed before any host process starts, so no host ever inherits the lock.
lock() {
  mkdir -p "$LAB"
  exec 9>"$LOCK"
  flock 9
}
unlock() { exec 9>&-; }

image_stamp() {
  # The recipe hash covers the build functions and package lists, so editing the recipe
  # rebuilds the image even when nobody remembers to bump IMAGE_VERSION.
  local recipe
  recipe=$({
    declare -f build_rootfs build_repo customise pack_image in_chroot
    echo "$BASE_PACKAGES|$REPO_PACKAGES|$SUITE|$MIRROR"
  } | sha256sum | cut -c1-16)
  echo "slice-lab-image v$IMAGE_VERSION $SUITE recipe=$recipe"
}
image_complete() { [ "$(cat "$IMAGE/stamp" 2>/dev/null)" = "$(image_stamp)" ]; }

# Indexes of the hosts with a state folder, in numeric order.
host_indexes() {
  local s
  for s in "$STATE"/h*; do echo "${s##*/h}"; done | sort -n
}

running_hosts() {
  local n
  for n in $(host_indexes); do
    recorded_alive "$STATE/h$n/pid" && echo "$n"
  done
  true
}

# ---------------------------------------------------------------------------------------------
# check

cmd_check() {
  local problems=() c
  [ "$(id -u)" = 0 ] || problems+=("not root: the lab creates namespaces, veths, cgroups and mounts")
  for c in debootstrap:debootstrap systemd-nspawn:systemd-container ssh:openssh-client \
    ssh-keygen:openssh-client zstd:zstd dpkg-scanpackages:dpkg-dev ip:iproute2 \
    unshare:util-linux setpriv:util-linux flock:util-linux chroot:coreutils tar:tar; do
    command -v "${c%%:*}" >/dev/null ||
      problems+=("no ${c%%:*}: apt-get install ${c##*:}")
  done
  cg2_root >/dev/null || problems+=("no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified")
  grep -qw overlay /proc/filesystems || problems+=("the kernel has no overlayfs")
  if [ "$(id -u)" = 0 ] && ! unshare --net --mount --pid --fork --uts --ipc --cgroup true 2>/dev/null; then
    problems+=("cannot create namespaces (unshare --net --mount --pid --uts --ipc --cgroup)")
  fi
  if [ "${#problems[@]}" -gt 0 ]; then
    printf 'lab: this machine cannot run the lab:\n' >&2
    printf '  - %s\n' "${problems[@]}" >&2
    printf '  install: apt-get install debootstrap systemd-container openssh-client zstd dpkg-dev iproute2\n' >&2
    exit 1
  fi
  echo "lab: this machine can run the lab"
}

# ---------------------------------------------------------------------------------------------
# image

BUILD=$LAB/build
BUILD_LOG=$BUILD/build.log

# Runs a command chrooted into $1 inside a private mount namespace: whatever it mounts (proc,
# the resolver, the repo) disappears with it, even when it is killed, so a crashed build never
# leaves mounts behind that a later `rm -rf` could walk into.
# Extra binds come from IN_CHROOT_BINDS ("src:dst[:ro] ...", dst inside the root).
in_chroot() {
  local root=$1
  shift
  # shellcheck disable=SC2016 # the script expands its own variables
  unshare --mount --propagation private -- /bin/bash -euc '
    root=$1; shift
    mount -t proc proc "$root/proc"
    for b in ${IN_CHROOT_BINDS:-}; do
      IFS=: read -r src dst mode <<<"$b"
      mount --bind "$src" "$root$dst"
      [ "$mode" != ro ] || mount -o remount,bind,ro "$root$dst"
    done
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"' in_chroot "$root" "$@"
}

build_rootfs() {
  local root=$1
  # debootstrap mounts proc and sys into the target: keep those mounts in a private namespace.
  unshare --mount --propagation private -- \
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$MIRROR"
}

# The hosts have no route out, so everything a test may install comes from a local, flat
# repository: the extra packages and the pending bookworm-security/-updates upgrades (a real
# patching workload for `apt-get upgrade`).
build_repo() {
  local root=$1 repo=$2
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s-security %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
  [ -e "$root/etc/resolv.conf" ] || : >"$root/etc/resolv.conf"
  # shellcheck disable=SC2086
  IN_CHROOT_BINDS="$(readlink -f /etc/resolv.conf):/etc/resolv.conf:ro" in_chroot "$root" /bin/sh -euc "
    apt-get -q update
    apt-get -q -y --no-install-recommends --download-only install $REPO_PACKAGES
    apt-get -q -y --download-only upgrade"
  mkdir -p "$repo"
  mv "$root"/var/cache/apt/archives/*.deb "$repo/"
  (cd "$repo" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null)
  local debs=("$repo"/*.deb)
  echo "${#debs[@]} packages in the offline repository"
}

# Everything that makes the plain Debian tree a lab host. Runs inside the image.
customise() {
  local root=$1 repo=$2 pubkey=$3
  in_chroot "$root" /bin/sh -eu -s "$pubkey" <<'EOF'
pubkey=$1
# postinst scripts must not start daemons in the build chroot; removed again at the end.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

# root, `lab` (sudo without a password) and `labpw` (sudo that asks for its password: the
# %sudo rule of Debian's sudoers) all log in with the lab key.
useradd --create-home --shell /bin/bash --groups sudo lab
useradd --create-home --shell /bin/bash --groups sudo labpw
echo 'labpw:labpw-secret' | chpasswd
echo 'lab ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/lab
chmod 440 /etc/sudoers.d/lab
visudo -cq
for home in /root /home/lab /home/labpw; do
  user=$(stat -c %U "$home")
  install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
  printf '%s\n' "$pubkey" >"$home/.ssh/authorized_keys"
  chown "$user:" "$home/.ssh/authorized_keys"
  chmod 600 "$home/.ssh/authorized_keys"
done

# sshd logs at VERBOSE to its own file so tests can count sessions ("Starting session:
# command ..." is one line per exec request). On the command line rather than in
# sshd_config, so a playbook that rewrites sshd_config cannot switch the counting off.
echo 'SSHD_OPTS="-E /var/log/sshd.log -o LogLevel=VERBOSE"' >/etc/default/ssh
# Host keys once, in the image: every host shares them (clients ignore them anyway).
ssh-keygen -A

# Faster and lighter hosts: journal in memory, dpkg without fsyncs (halves upgrade time).
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' >/etc/systemd/journald.conf.d/slice-lab.conf
echo force-unsafe-io >/etc/dpkg/dpkg.cfg.d/slice-lab-unsafe-io

# Per-host identity (hostname, hosts, machine-id) is written into each host's upper layer;
# the empty machine-id here is only a fallback.
: >/etc/machine-id
echo lab >/etc/hostname
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
echo '# lab host: no DNS, no default route' >/etc/resolv.conf

# Mount points for the offline repo, the lab files and docker's own filesystem.
mkdir -p /srv/lab-repo /srv/lab-files /var/lib/docker
echo 'deb [trusted=yes] file:/srv/lab-repo ./' >/etc/apt/sources.list
EOF
  # Package lists of the offline repo baked in: `apt-get install` works without an update.
  IN_CHROOT_BINDS="$repo:/srv/lab-repo:ro" in_chroot "$root" /bin/sh -euc '
    apt-get -q update
    apt-get clean
    rm -f /usr/sbin/policy-rc.d'
}

pack_image() {
  local root=$1 out=$2 deb
  # A tiny rootfs for `docker import` inside hosts: docker images without a registry.
  local bb=$BUILD/busybox
  rm -rf "$bb"
  mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/proc" "$bb/sys" "$bb/dev" "$out/files"
  local debs=("$out"/repo/busybox-static_*.deb)
  deb=${debs[0]}
  dpkg --fsys-tarfile "$deb" | tar -xO ./bin/busybox >"$bb/bin/busybox"
  chmod 755 "$bb/bin/busybox"
  for a in $("$bb/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -s busybox "$bb/bin/$a"
  done
  tar --numeric-owner -C "$bb" -cf "$out/files/busybox-rootfs.tar" .
  # The image itself, packed (73 MB): a few seconds to unpack, so a lost base is cheap to redo.
  tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$root" -cf - . |
    zstd -q -T0 -3 -o "$out/rootfs.tar.zst"
}

cmd_image() {
  need_root
  if image_complete; then
    ensure_base
    log "image cached in $IMAGE ($(cat "$IMAGE/stamp"))"
    return
  fi
  lock
  if image_complete; then # built by a concurrent caller while we waited for the lock
    unlock
    ensure_base
    log "image cached in $IMAGE"
    return
  fi
  [ -z "$(running_hosts)" ] || die "hosts are running on the old image: lab.sh downall first"
  local t0 root out
  t0=$(now)
  root=$BUILD/rootfs out=$BUILD/out
  unmount_under "$BUILD"
  rm -rf "$BUILD"
  mkdir -p "$out/repo"
  : >"$BUILD_LOG"
  trap 'log "image build failed; the last lines of $BUILD_LOG:"; tail -n 40 "$BUILD_LOG" >&2' ERR
  log "building the image in $BUILD (log: $BUILD_LOG)"
  ssh-keygen -q -t ed25519 -N '' -C slice-lab -f "$out/id_ed25519"
  log "debootstrap $SUITE from $MIRROR (about 80 s)"
  build_rootfs "$root" >>"$BUILD_LOG" 2>&1
  log "offline repository: $REPO_PACKAGES + pending upgrades"
  build_repo "$root" "$out/repo" >>"$BUILD_LOG" 2>&1
  log "users, keys, sshd, apt sources"
  customise "$root" "$out/repo" "$(cat "$out/id_ed25519.pub")" >>"$BUILD_LOG" 2>&1
  log "packing"
  pack_image "$root" "$out" >>"$BUILD_LOG" 2>&1
  trap - ERR
  cp "$BUILD_LOG" "$out/build.log"
  # Swap in the new image; the stamp goes last, so an image without it is never used.
  rm -rf "$IMAGE" "$BASE" "$LAB/base.stamp"
  mv "$out" "$IMAGE"
  image_stamp >"$IMAGE/stamp.tmp"
  mv "$IMAGE/stamp.tmp" "$IMAGE/stamp"
  rm -rf "$BUILD"
  unlock
  # Unpack the base now rather than in the first `up`, which is then as quick as any other.
  ensure_base
  log "image built in $(since "$t0") s: $(du -h "$IMAGE/rootfs.tar.zst" | cut -f1) packed, $(find "$IMAGE/repo" -name '*.deb' | wc -l) packages in the repo"
}

# Unpacks the image once into $BASE; every host is an overlay over it and never writes to it.
ensure_base() {
  local stamp
  stamp=$(cat "$IMAGE/stamp")
  [ "$(cat "$LAB/base.stamp" 2>/dev/null)" = "$stamp" ] && return
  lock
  if [ "$(cat "$LAB/base.stamp" 2>/dev/null)" != "$stamp" ]; then
    [ -z "$(running_hosts)" ] || die "hosts are running on an old base: lab.sh downall first"
    rm -rf "$BASE" "$BASE.tmp" "$LAB/base.stamp"
    mkdir -p "$BASE.tmp"
    zstd -q -dc "$IMAGE/rootfs.tar.zst" |
      tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$BASE.tmp" -xf -
    mv "$BASE.tmp" "$BASE"
    echo "$stamp" >"$LAB/base.stamp"
  fi
  unlock
}

# ---------------------------------------------------------------------------------------------
# hosts

# A host index is free when nothing of a host with that index exists on the machine.
idx_free() {
  local n=$1
  [ ! -e "$STATE/h$n" ] || return 1
  [ ! -e "/run/netns/$(netns_of "$n")" ] || return 1
  ! ip link show "$(veth_of "$n")" >/dev/null 2>&1 || return 1
  # Someone else's network using 10.200.N.0/24 would take our traffic: never share it.
  [ -z "$(ip -4 route show root "10.200.$n.0/24" 2>/dev/null)" ]
}

# A host started for a process (SLICE_LAB_OWNER) that has died is garbage: its guard will never
# run `down`. Hosts without an owner (started by hand) are never reclaimed.
owner_dead() { [ -s "$STATE/h$1/owner" ] && ! recorded_alive "$STATE/h$1/owner"; }

cmd_up() {
  need_root
  local want=${1:?usage: lab.sh up IDX|auto [a|b]} kind=${2:-a} n="" t0
  [[ $kind = a || $kind = b ]] || die "host kind must be a or b, not '$kind'"
  [ "$want" = auto ] || valid_idx "$want"
  image_complete || die "no complete image in $IMAGE: run lab.sh image first"
  [ "$kind" = a ] || command -v systemd-nspawn >/dev/null || die "kind b needs systemd-nspawn (apt-get install systemd-container)"
  t0=$(now)
  ensure_base

  # Claim the index under the lock: the state folder is the claim.
  lock
  if [ "$want" = auto ]; then
    local i
    # Hosts of test processes that died without their guards (SIGKILL, Ctrl-C) go first, so
    # they give back their indexes and their share of the machine.
    for i in $(host_indexes); do
      if owner_dead "$i"; then
        log "reclaiming h$i: its owner is gone"
        teardown "$i"
      fi
    done
    for i in $(seq 100 250); do
      if idx_free "$i"; then
        n=$i
        break
      fi
    done
    [ -n "$n" ] || die "no free host index in 100..250 (lab.sh status)"
  else
    n=$want
    if [ -e "$STATE/h$n" ] && owner_dead "$n"; then
      log "reclaiming h$n: its owner is gone"
      teardown "$n"
    fi
    idx_free "$n" || die "h$n is in use (lab.sh status; lab.sh down $n)"
  fi
  local s=$STATE/h$n
  mkdir -p "$s"
  echo "$kind" >"$s/kind"
  if [ -n "${SLICE_LAB_OWNER:-}" ]; then
    proc_id "$SLICE_LAB_OWNER" >"$s/owner" || die "SLICE_LAB_OWNER=$SLICE_LAB_OWNER is not a running process"
  fi
  unlock

  # From here on a failure tears the half-started host down again.
  trap 'log "h$n failed to start"; teardown "$n" || true' ERR
  prepare_host "$n"
  net_up "$n"
  local cg
  for cg in $(cg_roots); do mkdir -p "$cg/$CG_NAME/h$n"; done
  # setsid: the host outlives this script and the caller's session; its output goes to a
  # file, so a caller that reads our stdout to the end (a test) is never kept waiting.
  setsid "$SELF" _run "$n" "$kind" </dev/null >"$s/console.log" 2>&1 &
  # The pid file is written by _run itself; wait for it so `down` always finds the process.
  local i
  for i in $(seq 1 200); do
    [ -s "$s/pid" ] && break
    sleep 0.01
  done
  [ -s "$s/pid" ] || false
  trap - ERR
  log "h$n ($kind) started at $(ip_of "$n") in $(since "$t0") s"
  [ "$want" != auto ] || echo "$n"
}

# The per-host upper layer starts with the host's identity; everything else comes from BASE.
prepare_host() {
  local n=$1 s=$STATE/h$1
  mkdir -p "$s/upper/etc" "$s/work" "$s/root" "$s/docker"
  echo "h$n" >"$s/upper/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\th%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$n" \
    >"$s/upper/etc/hosts"
  # Its own machine-id: an empty one would make systemd treat every boot as the first one
  # (and run preset-all, changing which units are enabled).
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$s/upper/etc/machine-id"
  echo >>"$s/upper/etc/machine-id"
}

# netns slicelab-hN with eth0 10.200.N.2/24, veth slab-hN 10.200.N.1/24 on the machine; no
# default route, so a host can reach nothing but this machine's end of its own veth.
net_up() {
  local n=$1 ns veth
  ns=$(netns_of "$n") veth=$(veth_of "$n")
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip addr add "$(gw_of "$n")/24" dev "$veth"
  ip link set "$veth" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$(ip_of "$n")/24" dev eth0
  ip -n "$ns" link set eth0 up
}

# Internal: the host's first process (started with setsid). Records itself, moves into the
# host's cgroups so that `down` can kill every process of the host at once, then becomes the
# host.
run_host() {
  local n=$1 kind=$2 s=$STATE/h$1 cg
  proc_id $$ >"$s/pid.tmp"
  mv "$s/pid.tmp" "$s/pid"
  for cg in $(cg_roots); do echo $$ >"$cg/$CG_NAME/h$n/cgroup.procs"; done
  if [ "$kind" = a ]; then
    # New mount, pid, uts, ipc and cgroup namespaces inside the host's netns. The cgroup
    # namespace is rooted at slice-lab/hN because we joined it just above. --kill-child: when
    # unshare dies, the host's pid 1 (and so the whole pid namespace) dies with it.
    exec ip netns exec "$(netns_of "$n")" unshare --cgroup --mount --uts --ipc --pid --fork \
      --kill-child=SIGKILL --propagation private "$SELF" _boot_a "$n"
  fi
  # Kind b. Without systemd as PID 1 on the machine there is no machined and no bus:
  # --register=no --keep-unit. API_VFS_WRITABLE=network keeps /proc/sys read-only except
  # /proc/sys/net (per netns), and CAP_NET_ADMIN lets the host manage its own firewall.
  # @keyring and bpf let dockerd run inside. The journal is never linked to the machine's,
  # and the machine's resolv.conf and timezone are not copied in.
  export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 SYSTEMD_NSPAWN_API_VFS_WRITABLE=network
  exec systemd-nspawn -q -D "$BASE" --overlay=+/:"$s/upper":/ --boot \
    --register=no --keep-unit --machine="slicelab-h$n" --hostname="h$n" \
    --network-namespace-path="/run/netns/$(netns_of "$n")" --capability=CAP_NET_ADMIN \
    --system-call-filter=@keyring --system-call-filter=bpf \
    --link-journal=no --resolv-conf=off --timezone=off \
    --bind-ro="$IMAGE/repo:/srv/lab-repo" --bind-ro="$IMAGE/files:/srv/lab-files" \
    --bind="$s/docker:/var/lib/docker" --console=pipe
}

# Internal: pid 1 of a kind a host, inside its namespaces. Builds the host's root and becomes
# tini, which starts sshd and reaps orphans.
boot_a() {
  local n=$1 s=$STATE/h$1
  local r=$s/root
  mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$s/upper,workdir=$s/work" "$r"
  mount -t proc proc "$r/proc"
  # kernel.*, vm.*, fs.* are global to the machine: read-only. net.* belongs to the netns.
  mount --bind "$r/proc/sys" "$r/proc/sys"
  mount --bind "$r/proc/sys/net" "$r/proc/sys/net"
  mount -o remount,bind,ro "$r/proc/sys"
  local f
  for f in sysrq-trigger kcore; do
    [ ! -e "$r/proc/$f" ] || mount --bind /dev/null "$r/proc/$f"
  done
  # `ip netns exec` gave us a sysfs of this netns; read-only, with the host's own cgroup2
  # (rooted at slice-lab/hN by the cgroup namespace).
  mount --bind /sys "$r/sys"
  mount -o remount,bind,ro "$r/sys"
  mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup"
  # A private /dev with just the usual nodes, its own ptys, /run and /dev/shm in memory.
  mount -t tmpfs -o mode=755,size=16m tmpfs "$r/dev"
  mknod -m 666 "$r/dev/null" c 1 3
  mknod -m 666 "$r/dev/zero" c 1 5
  mknod -m 666 "$r/dev/full" c 1 7
  mknod -m 666 "$r/dev/random" c 1 8
  mknod -m 666 "$r/dev/urandom" c 1 9
  mknod -m 666 "$r/dev/tty" c 5 0
  mkdir "$r/dev/pts" "$r/dev/shm"
  ln -s pts/ptmx "$r/dev/ptmx"
  ln -s /proc/self/fd "$r/dev/fd"
  ln -s /proc/self/fd/0 "$r/dev/stdin"
  ln -s /proc/self/fd/1 "$r/dev/stdout"
  ln -s /proc/self/fd/2 "$r/dev/stderr"
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$r/dev/pts"
  mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
  mount -t tmpfs -o mode=755 tmpfs "$r/run"
  mount --bind -o ro "$IMAGE/repo" "$r/srv/lab-repo"
  mount --bind -o ro "$IMAGE/files" "$r/srv/lab-files"
  mount --bind "$s/docker" "$r/var/lib/docker"
  hostname "h$n"
  # Not even root in the host may load modules, set the clock or poke raw devices.
  exec setpriv --bounding-set -sys_module,-sys_time,-syslog,-sys_rawio,-wake_alarm,-mac_admin,-mac_override \
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    /usr/bin/tini -- /bin/sh -c 'mkdir -p /run/sshd && /etc/init.d/ssh start && exec sleep infinity'
}

cmd_wait() {
  local n=${1:?usage: lab.sh wait IDX [SECONDS]} timeout=${2:-60} s t0 kind out
  valid_idx "$n"
  s=$STATE/h$n
  [ -d "$s" ] || die "h$n is not up"
  kind=$(cat "$s/kind")
  t0=$(date +%s)
  while :; do
    if [ "$kind" = a ]; then
      ssh "${SSH_OPTS[@]}" "root@$(ip_of "$n")" true 2>/dev/null && break
    else
      out=$(ssh "${SSH_OPTS[@]}" "root@$(ip_of "$n")" systemctl is-system-running 2>/dev/null || true)
      case $out in running | degraded) break ;; esac
    fi
    if ! recorded_alive "$s/pid"; then
      log "h$n died while starting; the end of its console:"
      tail -n 30 "$s/console.log" >&2
      exit 1
    fi
    if [ $(($(date +%s) - t0)) -ge "$timeout" ]; then
      log "h$n did not answer within $timeout s${out:+ (systemd: $out)}; the end of its console:"
      tail -n 30 "$s/console.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

cmd_ssh() {
  local target=${1:?usage: lab.sh ssh [USER@]IDX [CMD...]} user=root n
  shift
  if [[ $target == *@* ]]; then
    user=${target%@*}
    n=${target##*@}
  else
    n=$target
  fi
  valid_idx "$n"
  exec ssh "${SSH_OPTS[@]}" "$user@$(ip_of "$n")" "$@"
}

# ---------------------------------------------------------------------------------------------
# teardown

# Unmounts anything mounted under $1 in our mount namespace (defensive: the hosts' own mounts
# live in their private namespaces), so that `rm -rf` can never reach into a mounted tree.
unmount_under() {
  local dir m
  dir=$(readlink -m "$1")
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Kills every process of host N: the cgroup holds them all (cgroup.kill where the kernel has
# it), and the netns catches anything that joined it from outside (`ip netns exec`).
kill_host_processes() {
  local n=$1 cg2 pid d
  if cg2=$(cg2_root) && [ -e "$cg2/$CG_NAME/h$n/cgroup.kill" ]; then
    echo 1 >"$cg2/$CG_NAME/h$n/cgroup.kill" 2>/dev/null || true
  fi
  for cg2 in $(cg_roots); do
    [ -d "$cg2/$CG_NAME/h$n" ] || continue
    while read -r d; do
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$d/cgroup.procs"
    done < <(find "$cg2/$CG_NAME/h$n" -type d 2>/dev/null)
  done
  if [ -e "/run/netns/$(netns_of "$n")" ]; then
    for pid in $(ip netns pids "$(netns_of "$n")" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  fi
}

cgroup_empty() {
  local n=$1 cg d
  for cg in $(cg_roots); do
    [ -d "$cg/$CG_NAME/h$n" ] || continue
    while read -r d; do
      [ ! -s "$d/cgroup.procs" ] || return 1
    done < <(find "$cg/$CG_NAME/h$n" -type d 2>/dev/null)
  done
}

# Removes everything host N has on this machine. Safe to run on a half-started, a crashed or
# an already removed host.
teardown() {
  local n=$1 s=$STATE/h$1 ns veth i cg kind pid
  ns=$(netns_of "$n") veth=$(veth_of "$n")
  kind=$(cat "$s/kind" 2>/dev/null || echo "?")
  if [ "$kind" = b ] && recorded_alive "$s/pid"; then
    # SIGTERM to nspawn powers the container off cleanly; the state is thrown away anyway,
    # so it gets only a short grace period.
    read -r pid _ <"$s/pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 "${SLICE_LAB_STOP_GRACE:-30}"); do
      recorded_alive "$s/pid" || break
      sleep 0.1
    done
  fi
  kill_host_processes "$n"
  if recorded_alive "$s/pid"; then
    read -r pid _ <"$s/pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Killed tasks leave their cgroup only once the kernel has finished them off.
  for i in $(seq 1 100); do
    cgroup_empty "$n" && ! recorded_alive "$s/pid" && break
    [ $((i % 10)) -ne 0 ] || kill_host_processes "$n"
    sleep 0.05
  done
  ip netns del "$ns" 2>/dev/null || true
  # The veth goes with the netns once its last process is gone, but asynchronously: wait for
  # it so the index can be reused at once, and delete it ourselves if it lingers.
  for i in $(seq 1 50); do
    ip link show "$veth" >/dev/null 2>&1 || break
    sleep 0.05
  done
  ip link del "$veth" 2>/dev/null || true
  for cg in $(cg_roots); do
    [ -d "$cg/$CG_NAME/h$n" ] || continue
    for i in $(seq 1 50); do
      find "$cg/$CG_NAME/h$n" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$cg/$CG_NAME/h$n" ] || break
      sleep 0.05
    done
    [ ! -d "$cg/$CG_NAME/h$n" ] || log "warning: could not remove cgroup $cg/$CG_NAME/h$n"
    rmdir "$cg/$CG_NAME" 2>/dev/null || true # fails harmlessly while other hosts run
  done
  rm -rf "/run/systemd/nspawn/propagate/slicelab-h$n"
  if [ -d "$s" ]; then
    unmount_under "$s"
    rm -rf "$s"
  fi
}

cmd_down() {
  need_root
  local n=${1:?usage: lab.sh down IDX} t0
  valid_idx "$n"
  t0=$(now)
  teardown "$n"
  log "h$n down in $(since "$t0") s"
}

# Every host with a state folder, then whatever a crash left without one: netns, veths,
# cgroups and nspawn folders that carry the lab's names.
cmd_downall() {
  need_root
  local t0 n ns link cg d
  t0=$(now)
  for n in $(host_indexes); do teardown "$n"; done
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^slicelab-h[0-9]+$'); do
    teardown "${ns#slicelab-h}"
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep -E '^slab-h[0-9]+$'); do
    teardown "${link#slab-h}"
  done
  for cg in $(cg_roots); do
    for d in "$cg/$CG_NAME"/h*; do teardown "${d##*/h}"; done
    rmdir "$cg/$CG_NAME" 2>/dev/null || true
  done
  for d in /run/systemd/nspawn/propagate/slicelab-h*; do rm -rf "$d"; done
  # nspawn's own folders in /run, if no other container uses them any more.
  rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/locks /run/systemd/nspawn 2>/dev/null || true
  log "all hosts down in $(since "$t0") s"
}

cmd_status() {
  local n kind state owner ns s
  for n in $(host_indexes); do
    s=$STATE/h$n
    kind=$(cat "$s/kind" 2>/dev/null || echo "?")
    if recorded_alive "$s/pid"; then state=running; else state="dead (lab.sh down $n)"; fi
    owner=""
    if [ -s "$s/owner" ]; then
      if recorded_alive "$s/owner"; then owner=" owner=$(cut -d' ' -f1 "$s/owner")"; else owner=" owner=gone"; fi
    fi
    printf 'h%-4s %s %-13s %s%s\n' "$n" "$kind" "$(ip_of "$n")" "$state" "$owner"
  done
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^slicelab-h[0-9]+$'); do
    [ -d "$STATE/h${ns#slicelab-h}" ] || echo "stray netns $ns (lab.sh downall)"
  done
}

# ---------------------------------------------------------------------------------------------

case ${1:-} in
  check) cmd_check ;;
  image) cmd_image ;;
  up) cmd_up "${@:2}" ;;
  wait) cmd_wait "${@:2}" ;;
  ssh) cmd_ssh "${@:2}" ;;
  ip)
    valid_idx "${2:-}"
    ip_of "$2"
    ;;
  key)
    [ -f "$IMAGE/id_ed25519" ] || die "no lab key yet: run lab.sh image"
    echo "$IMAGE/id_ed25519"
    ;;
  down) cmd_down "${@:2}" ;;
  downall) cmd_downall ;;
  status) cmd_status ;;
  _run) run_host "$2" "$3" ;;
  _boot_a) boot_a "$2" ;;
  *) usage ;;
esac
