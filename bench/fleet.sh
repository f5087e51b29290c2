#!/usr/bin/env bash
# Fleet benchmark: wall time, controller peak RSS and CPU of `slice check` / `slice apply` over
# SSH on 1, 10 and 50 lab hosts (tests/lab, kind a) with a 40-task playbook. See bench/README.md.
#
# usage: bash bench/fleet.sh   (from the repo root, as root; ~8 minutes on 2 CPUs, most of it
#                              the 50-host applies and restarting their hosts)
#
# Environment (all optional):
#   SLICE_BENCH_SIZES   fleet sizes, default "1 10 50" (each at most 50)
#   SLICE_BENCH_RUNS    measured runs per scenario, default 5 (after 1 warm-up)
#   SLICE_BENCH_KEEP=1  keep the temp dir (playbook, inventories, slice's output) and print it
#   SLICE_LAB           the lab's folder, as for tests/lab/lab.sh
#
# What it touches: only lab hosts h200..h249 (10.200.200.2 .. 10.200.249.2) that it starts itself
# and always stops again, and a temp dir. Never ~/.ssh, never /etc of this machine.
set -euo pipefail
# EPOCHREALTIME, awk and sort must all use '.' as the decimal point, whatever the caller's locale.
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
LABSH=$ROOT/tests/lab/lab.sh
LAB=${SLICE_LAB:-/var/tmp/slice-lab}
SLICE=$ROOT/target/release/slice

# A fixed index range of our own: `lab.sh up auto` (the tests) starts at 100 and takes the lowest
# free index, so 200..249 only meets it when more than 100 test hosts run at once, and the
# fixed-index tests use 1..99. 50 indexes: the largest fleet below.
FIRST=200
LAST=249
SIZES=${SLICE_BENCH_SIZES:-1 10 50}
RUNS=${SLICE_BENCH_RUNS:-5}
WARMUPS=1
FORKS=50
AIM_ONE_HOST_MS=100
AIM_SCALE=2

# SLICE must log in with the lab key from our ssh_config only: no agent (it would be tried
# first), no sudo password, no key passphrase from the caller's environment.
unset SSH_AUTH_SOCK SLICE_BECOME_PASSWORD SLICE_SSH_PASSPHRASE
# Hosts we start belong to this process: if it is killed before its EXIT trap can run (SIGKILL),
# the next `lab.sh up auto` reclaims them, and the trap can tell ours from anyone else's.
export SLICE_LAB_OWNER=$$

log() { printf 'fleet: %s\n' "$*" >&2; }
die() {
  printf 'fleet: FAIL: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------
# preconditions

[ "$(id -u)" = 0 ] || die "run as root: the lab creates namespaces, veths and cgroups"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "SLICE_BENCH_RUNS must be a positive number, not '$RUNS'"
for n in $SIZES; do
  if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt $((LAST - FIRST + 1)) ]; then
    die "fleet sizes must be 1..$((LAST - FIRST + 1)), not '$n'"
  fi
done

# GNU time gives the peak RSS (%M) of the process it waits for; bash's `time` keyword cannot.
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time (for the peak RSS)"
  apt-get -o DPkg::Lock::Timeout=300 install -y -q time >/dev/null
fi

log "building the release binary"
# The default target dir, whatever the caller's environment says, so $SLICE is what was built.
env -u CARGO_TARGET_DIR cargo build --release --locked --quiet
[ -x "$SLICE" ] || die "no $SLICE after the build"

bash "$LABSH" image >&2
KEY=$(bash "$LABSH" key)
HOSTKEY_PUB=$LAB/base/etc/ssh/ssh_host_ed25519_key.pub
[ -s "$HOSTKEY_PUB" ] || die "no lab host key at $HOSTKEY_PUB (lab.sh image should have unpacked it)"

# Our range must be free before we start anything: `lab.sh up IDX` would refuse an index in use,
# but checking first gives one clear message and never starts half a fleet.
busy=()
status=$(bash "$LABSH" status)
for i in $(seq "$FIRST" "$LAST"); do
  if grep -qE "^h$i |slicelab-h$i\$" <<<"$status" || [ -e "/run/netns/slicelab-h$i" ] ||
    ip link show "slab-h$i" >/dev/null 2>&1 || [ -n "$(ip -4 route show root "10.200.$i.0/24")" ]; then
    busy+=("$i")
  fi
done
[ "${#busy[@]}" -eq 0 ] || die "lab indexes ${busy[*]} are in use (lab.sh status); this benchmark needs $FIRST..$LAST"

# ---------------------------------------------------------------------------------------------
# teardown: always, and only of the hosts this process started

# A process's start time (field 22 of /proc/PID/stat), as lab.sh records it with the pid.
start_time() {
  local stat fields
  read -r stat <"/proc/$1/stat"
  read -ra fields <<<"${stat##*) }"
  echo "${fields[19]}"
}
ME="$$ $(start_time $$)"

# Indexes in our range whose owner file names this very process (pid and start time): a host
# that someone else started in the meantime is never ours, so never stopped here.
our_hosts() {
  local i owner
  for i in $(seq "$FIRST" "$LAST"); do
    owner=$(cat "$LAB/state/h$i/owner" 2>/dev/null || true)
    [ "$owner" != "$ME" ] || echo "$i"
  done
}

WORK=""
cleanup() {
  local rc=$? i pids=()
  trap - EXIT
  # A signal can come while `lab.sh up` runs in the background for some hosts: let those
  # finish first (they are bounded by lab.sh's own timeouts), or a host could come up after
  # its teardown.
  wait || true
  for i in $(our_hosts); do
    bash "$LABSH" down "$i" >/dev/null 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  if [ -n "$(our_hosts)" ]; then
    log "warning: hosts $(our_hosts | tr '\n' ' ')still run: tests/lab/lab.sh down IDX"
    rc=1
  fi
  if [ -n "$WORK" ]; then
    if [ "${SLICE_BENCH_KEEP:-}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
# Without these, bash would die of the signal without running the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d -t slice-fleet.XXXXXX)
mkdir -p "$WORK/log"

# ---------------------------------------------------------------------------------------------
# the controller's files: ssh_config, known_hosts, playbook (as tests/ssh.rs does)

# Everything SLICE reads for SSH comes from here (--ssh-config, HOME=$WORK): the lab key, and a
# known_hosts that already trusts the lab image's host key, so no run is about host keys.
cat >"$WORK/ssh_config" <<EOF
Host *
  UserKnownHostsFile $WORK/known_hosts
  GlobalKnownHostsFile /dev/null
  IdentityFile $KEY
  IdentitiesOnly yes
EOF
hostkey=$(awk '{ print $1, $2 }' "$HOSTKEY_PUB")
for i in $(seq "$FIRST" "$LAST"); do echo "10.200.$i.2 $hostkey"; done >"$WORK/known_hosts"

# 40 tasks, 8 of each kind, all of which drift on a fresh host and change something when applied
# (the sysctls' running values too: each differs from the kernel's default in a new netns). Only
# net.ipv4.* sysctls: they belong to the host's own network namespace, never to this machine.
gen_playbook() {
  local i
  local sysctls=(conf.all.accept_redirects=0 conf.default.accept_redirects=0
    conf.all.send_redirects=0 conf.default.send_redirects=0 conf.all.log_martians=1
    conf.default.log_martians=1 conf.all.secure_redirects=0 tcp_rfc1337=1)
  local dirs=(conf.d data log run cache spool)
  local sshd=("PermitRootLogin prohibit-password" "X11Forwarding no" "MaxAuthTries 3")
  local docker=("icc: false" "live-restore: true" "userland-proxy: false" "no-new-privileges: true")
  echo "name: fleet-bench"
  echo "vars: { owner_team: platform }"
  echo "tasks:"
  # directory (8)
  echo "  - { name: dir docker, directory: { path: /etc/docker, mode: \"0755\", owner: root, group: root } }"
  echo "  - { name: dir bench, directory: { path: /srv/bench, mode: \"0750\", owner: root, group: root } }"
  for i in "${dirs[@]}"; do
    echo "  - { name: dir $i, directory: { path: /srv/bench/$i, mode: \"0750\" } }"
  done
  # file (8), templated per host
  for i in $(seq 1 8); do
    # The \n stay literal here: YAML turns them into newlines.
    printf '  - { name: file %s, file: { path: /srv/bench/conf.d/app-%s.conf, content: "# part %s\\nhost = {{ inventory_hostname }}\\nteam = {{ owner_team }}\\n", mode: "0640" } }\n' "$i" "$i" "$i"
  done
  # line (8): 3 in the real sshd_config (no sshd restart: the lab keeps logging in), 5 in a new file
  i=0
  for l in "${sshd[@]}"; do
    i=$((i + 1))
    echo "  - { name: sshd $i, line: { path: /etc/ssh/sshd_config, regexp: '^#?${l%% *}', line: \"$l\" } }"
  done
  for i in $(seq 1 5); do
    echo "  - { name: limit $i, line: { path: /srv/bench/conf.d/limits.conf, line: \"* hard nofile$i 1024$i\", create: true, mode: \"0644\" } }"
  done
  # json (8): 4 keys of daemon.json, 4 nested keys of an app document
  i=0
  for l in "${docker[@]}"; do
    i=$((i + 1))
    echo "  - { name: docker $i, json: { path: /etc/docker/daemon.json, set: { $l } } }"
  done
  for i in $(seq 1 4); do
    echo "  - { name: app json $i, json: { path: /srv/bench/data/app.json, set: { limits: { k$i: $i } }, mode: \"0600\" } }"
  done
  # sysctl (8), in two sysctl.d files
  i=0
  for l in "${sysctls[@]}"; do
    i=$((i + 1))
    echo "  - { name: sysctl $i, sysctl: { name: net.ipv4.${l%%=*}, value: \"${l#*=}\", file: /etc/sysctl.d/9$((i % 2))-slice-bench.conf } }"
  done
}
gen_playbook >"$WORK/site.yml"
TASKS=$(grep -c '^  - {' "$WORK/site.yml")
[ "$TASKS" = 40 ] || die "the generated playbook has $TASKS tasks, not 40"

# ---------------------------------------------------------------------------------------------
# hosts

# Runs `lab.sh VERB IDX [ARG]` for every index of the current fleet at once; fails with the
# logs of those that failed.
lab_all() {
  local verb=$1 i failed=()
  local -a extra=()
  [ "$verb" != up ] || extra=(a)
  [ "$verb" != wait ] || extra=(60)
  local -A pid=()
  for i in "${IDXS[@]}"; do
    bash "$LABSH" "$verb" "$i" "${extra[@]}" >"$WORK/log/$verb-$i.log" 2>&1 &
    pid[$i]=$!
  done
  for i in "${IDXS[@]}"; do wait "${pid[$i]}" || failed+=("$i"); done
  if [ "${#failed[@]}" -gt 0 ]; then
    for i in "${failed[@]}"; do tail -n 20 "$WORK/log/$verb-$i.log" >&2; done
    die "lab.sh $verb failed for ${failed[*]}"
  fi
}

# ms since $1 (an EPOCHREALTIME).
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }

# Fresh hosts for every measured apply: a kind a host is an overlay over the shared image, so
# down + up gives back exactly the image's state (files, sysctls, sshd's log) in well under a
# second. Undoing the changes over ssh instead would leave what an undo script cannot see
# (dentries, the sysctl.d files' history, sshd's warm caches) and would be measured by nobody.
declare -A RESETS
fresh_hosts() {
  local t0=$EPOCHREALTIME
  lab_all down
  lab_all up
  lab_all wait
  RESETS[${#IDXS[@]}]+="$(ms_since "$t0") "
}

write_inventory() {
  local i
  {
    echo "all:"
    echo "  hosts:"
    for i in "${IDXS[@]}"; do
      echo "    h$i: { ansible_host: 10.200.$i.2, ansible_user: root, ansible_become: false }"
    done
  } >"$WORK/inventory.yml"
  # Parse and render for these hosts without touching them: a playbook mistake stops here,
  # not as a confusing exit code in the middle of the runs.
  HOME=$WORK "$SLICE" validate "$WORK/site.yml" -i "$WORK/inventory.yml" >"$WORK/out" 2>&1 || {
    cat "$WORK/out" >&2
    die "the generated playbook is not valid: $WORK/site.yml"
  }
}

# Our own ssh, for counting and for the round-trip baseline: the same config, never ~/.ssh.
lab_ssh() {
  HOME=$WORK ssh -F "$WORK/ssh_config" -o BatchMode=yes -o ConnectTimeout=5 "$@" </dev/null
}

# Lines of sshd's log on host $1 saying "Starting session: $2" ("command": exec requests,
# "subsystem": SFTP). sshd logs a session before running it, so the count includes the ssh
# that reads the log.
sessions() { lab_ssh "root@10.200.$1.2" "grep -c 'Starting session: $2' /var/log/sshd.log || true"; }

# ---------------------------------------------------------------------------------------------
# measuring

# Each lab host is a cgroup (slice-lab/hN in the cgroup2 hierarchy; /sys/fs/cgroup/unified on a
# hybrid layout), so the CPU the hosts spend on a run (sshd, login shells, SLICE's scripts) can be
# read, not guessed: on this machine it competes with the controller for the same CPUs.
CG2=""
for d in /sys/fs/cgroup /sys/fs/cgroup/unified; do
  if [ "$(stat -fc %T "$d" 2>/dev/null)" = cgroup2fs ]; then
    CG2=$d
    break
  fi
done
hosts_cpu_usec() {
  local i files=()
  for i in "${IDXS[@]}"; do files+=("$CG2/slice-lab/h$i/cpu.stat"); done
  awk '$1 == "usage_usec" { s += $2 } END { printf "%d", s }' "${files[@]}" 2>/dev/null || echo 0
}

# One run of slice against the current inventory. Sets MS (wall ms around /usr/bin/time, which
# adds about 1 ms of its own), RSS_KB (peak RSS: the largest of slice and of the `ssh -G`
# children it waited for, which are far smaller), CPU_S (user + system seconds of the same),
# HOSTS_CPU_S (CPU seconds the fleet's hosts used meanwhile) and RC. Output goes to files: a
# terminal would get progress bars, which cost time of their own.
run_slice() {
  local mode=$1 t0 m u s h0
  RC=0
  h0=$(hosts_cpu_usec)
  t0=$EPOCHREALTIME
  HOME=$WORK NO_COLOR=1 /usr/bin/time -f '%M %U %S' -o "$WORK/rusage" \
    "$SLICE" "$mode" "$WORK/site.yml" -i "$WORK/inventory.yml" --forks "$FORKS" \
    --ssh-config "$WORK/ssh_config" </dev/null >"$WORK/out" 2>"$WORK/err" || RC=$?
  MS=$(ms_since "$t0")
  # GNU time puts "Command exited with non-zero status N" before the figures: the last line.
  read -r m u s < <(tail -n 1 "$WORK/rusage")
  RSS_KB=$m
  CPU_S=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  HOSTS_CPU_S=$(awk -v a="$h0" -v b="$(hosts_cpu_usec)" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
}

# A run's exit code must be the one the scenario promises; anything else stops the benchmark.
expect_rc() {
  local what=$1 want=$2
  if [ "$RC" != "$want" ]; then
    echo "--- stdout (last 40 lines)" >&2
    tail -n 40 "$WORK/out" >&2
    echo "--- stderr (last 20 lines)" >&2
    tail -n 20 "$WORK/err" >&2
    die "$what exited $RC, expected $want"
  fi
}

# Every task on every host must be in the state the scenario expects: an exit code alone would
# not notice a run that measured something else (fewer tasks, a skipped host).
expect_lines() {
  local what=$1 word=$2 want=$3 got
  got=$(grep -c "^$word " "$WORK/out" || true)
  if [ "$got" != "$want" ]; then
    tail -n 40 "$WORK/out" >&2
    die "$what: $got report lines start with $word, expected $want"
  fi
}

stat_of() { # median|min|max VALUES...
  local what=$1
  shift
  printf '%s\n' "$@" | sort -g | awk -v w="$what" '{ a[NR] = $1 }
    END {
      if (w == "min") v = a[1]; else if (w == "max") v = a[NR];
      else if (NR % 2) v = a[(NR + 1) / 2]; else v = (a[NR / 2] + a[NR / 2 + 1]) / 2;
      printf "%.1f", v
    }'
}

# The median with two decimals (CPU seconds).
median2() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

ROWS=()
declare -A MEDIAN CPU_MEDIAN HCPU_MEDIAN
# scenario N MODE EXPECTED_RC LABEL [reset]: WARMUPS + RUNS runs, the warm-ups not counted.
scenario() {
  local n=$1 mode=$2 want=$3 label=$4 reset=${5:-} r ms=() rss=() cpu=() hcpu=() codes=()
  for r in $(seq 1 $((WARMUPS + RUNS))); do
    # The warm-up apply meets hosts that have only been checked (nothing changed on them);
    # every measured apply gets hosts fresh from the image.
    if [ -n "$reset" ] && [ "$r" -gt "$WARMUPS" ]; then fresh_hosts; fi
    run_slice "$mode"
    expect_rc "slice $mode on $n hosts ($label, run $r)" "$want"
    case $label in
      drift) expect_lines "$label, run $r" DRIFT $((TASKS * n)) ;;
      apply) expect_lines "$label, run $r" CHANGED $((TASKS * n)) ;;
      converged) expect_lines "$label, run $r" PASS $((TASKS * n)) ;;
    esac
    [ "$r" -gt "$WARMUPS" ] || continue
    ms+=("$MS")
    rss+=("$(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')")
    cpu+=("$CPU_S")
    hcpu+=("$HOSTS_CPU_S")
    codes+=("$RC")
  done
  MEDIAN[$n/$label]=$(stat_of median "${ms[@]}")
  CPU_MEDIAN[$n/$label]=$(median2 "${cpu[@]}")
  HCPU_MEDIAN[$n/$label]=$(median2 "${hcpu[@]}")
  ROWS+=("$(printf '%5s  %-17s %4s %10s %9s %9s %8s %8s %9s  %s' "$n" "$mode ($label)" "$RUNS" \
    "${MEDIAN[$n/$label]}" "$(stat_of min "${ms[@]}")" "$(stat_of max "${ms[@]}")" \
    "$(stat_of median "${rss[@]}")" "${CPU_MEDIAN[$n/$label]}" "${HCPU_MEDIAN[$n/$label]}" \
    "$(printf '%s\n' "${codes[@]}" | sort -u | paste -sd, -)")")
  log "$n hosts, $mode ($label): median ${MEDIAN[$n/$label]} ms"
}

CONTEXT=()
# Context on one host (the fleet of 1, converged after its scenarios): how many exec requests a
# converged check and a fresh apply send, and what a bare OpenSSH login + command and `ssh -G`
# cost here. SLICE runs `ssh -G` once per host, then its own libssh2 connection.
one_host_context() {
  local i=${IDXS[0]} before after sftp r t0 ssh_ms=() kex_ms=() g_ms=()
  before=$(sessions "$i" command)
  run_slice check
  expect_rc "converged check for counting" 0
  after=$(sessions "$i" command)
  CONTEXT+=("exec requests per host, one converged check: $((after - before - 1)) (sshd's 'Starting session: command' lines, minus our own read of the log)")

  fresh_hosts
  before=$(sessions "$i" command)
  sftp=$(sessions "$i" subsystem)
  run_slice apply
  expect_rc "apply for counting" 0
  after=$(sessions "$i" command)
  sftp=$(($(sessions "$i" subsystem) - sftp))
  CONTEXT+=("exec requests per host, one apply of $TASKS tasks on a fresh host: $((after - before - 2)) (+ $sftp SFTP session)")

  for r in $(seq 0 "$RUNS"); do
    t0=$EPOCHREALTIME
    lab_ssh "root@10.200.$i.2" true
    [ "$r" = 0 ] || ssh_ms+=("$(ms_since "$t0")")
    # OpenSSH's default key exchange (sntrup761x25519) costs the client tens of ms of CPU here;
    # libssh2 (SLICE) cannot do it and uses curve25519, so this is the comparable floor.
    t0=$EPOCHREALTIME
    lab_ssh -o KexAlgorithms=curve25519-sha256 "root@10.200.$i.2" true
    [ "$r" = 0 ] || kex_ms+=("$(ms_since "$t0")")
    t0=$EPOCHREALTIME
    # (stderr: without a command ssh -G warns that it would not allocate a tty)
    HOME=$WORK ssh -G -F "$WORK/ssh_config" -l root -o "HostName=10.200.$i.2" "h$i" </dev/null >/dev/null 2>&1
    [ "$r" = 0 ] || g_ms+=("$(ms_since "$t0")")
  done
  CONTEXT+=("OpenSSH 'ssh host true' (new connection, login, 1 exec) to the same host: median $(stat_of median "${ssh_ms[@]}") ms; with KexAlgorithms=curve25519-sha256 as libssh2 uses: median $(stat_of median "${kex_ms[@]}") ms")
  CONTEXT+=("'ssh -G' (run by SLICE once per host before connecting): median $(stat_of median "${g_ms[@]}") ms")
}

# ---------------------------------------------------------------------------------------------
# the runs

log "$TASKS-task playbook, sizes: $SIZES, $WARMUPS warm-up + $RUNS runs each, --forks $FORKS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$EPOCHREALTIME
for n in $SIZES; do
  mapfile -t IDXS < <(seq "$FIRST" $((FIRST + n - 1)))
  log "starting $n hosts (h$FIRST..h$((FIRST + n - 1)))"
  lab_all up
  lab_all wait
  write_inventory
  scenario "$n" check 2 drift
  scenario "$n" apply 0 apply reset
  scenario "$n" check 0 converged
  [ "$n" != 1 ] || one_host_context
  lab_all down
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# the report

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# verdict A OP B: "met" when A OP B holds (OP is <= or <), else "missed".
verdict() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { ok = (op == "<") ? (a < b) : (a <= b); print ok ? "met" : "missed" }'; }
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] || commit="$commit + uncommitted changes in src/"
echo
echo "SLICE fleet benchmark: $TASKS tasks (8 each of directory, file, line, json, sysctl), lab hosts of kind a, --forks $FORKS"
echo "$("$SLICE" --version) at $commit; $(nproc) CPUs, Linux $(uname -r); load average before $LOAD_BEFORE, after $LOAD_AFTER"
echo "$WARMUPS warm-up + $RUNS measured runs per row. ms: wall time of the whole slice process."
echo "RSS: median peak RSS of the controller (GNU time %M). CPU: median user+system seconds of the controller;"
echo "hosts CPU: median CPU seconds all the fleet's lab hosts used during the run (their cgroups' cpu.stat)."
echo
printf '%5s  %-17s %4s %10s %9s %9s %8s %8s %9s  %s\n' hosts scenario runs "median ms" "min ms" "max ms" "RSS MiB" "CPU s" "hosts CPU" exit
for row in "${ROWS[@]}"; do echo "$row"; done
echo
for label in drift converged; do
  one=${MEDIAN[1/$label]:-}
  [ -n "$one" ] || continue
  echo "one-host check ($label): $one ms = $(ratio "$one" "$AIM_ONE_HOST_MS") x the $AIM_ONE_HOST_MS ms aim ($(verdict "$one" "<=" "$AIM_ONE_HOST_MS"))"
  many=${MEDIAN[50/$label]:-}
  [ -n "$many" ] || continue
  r=$(ratio "$many" "$one")
  echo "50-host / one-host check ($label): $many / $one = $r (aim < $AIM_SCALE: $(verdict "$r" "<" "$AIM_SCALE"))"
  # The lab's hosts share this machine's CPUs with the controller: all the CPU the run needed,
  # spread over every CPU, is a floor no scheduling can beat here (a real fleet has its own).
  echo "  CPU floor for that 50-host check on $(nproc) CPUs: (controller ${CPU_MEDIAN[50/$label]} s + hosts ${HCPU_MEDIAN[50/$label]} s) / $(nproc) =" \
    "$(awk -v c="${CPU_MEDIAN[50/$label]}" -v h="${HCPU_MEDIAN[50/$label]}" -v n="$(nproc)" 'BEGIN { printf "%.0f", (c + h) / n * 1000 }') ms;" \
    "one host used ${HCPU_MEDIAN[1/$label]} s of host CPU and ${CPU_MEDIAN[1/$label]} s of controller CPU"
done
for line in "${CONTEXT[@]}"; do echo "$line"; done
for n in $SIZES; do
  # shellcheck disable=SC2086 # the recorded times are a space-separated list
  [ -z "${RESETS[$n]:-}" ] || echo "fresh hosts before each measured apply (lab.sh down + up + wait, not in the table), $n hosts: median $(stat_of median ${RESETS[$n]}) ms"
done
echo "total benchmark time: $(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
