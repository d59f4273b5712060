#!/usr/bin/env bash
# The opencontainers/runtime-tools validation suite against an OCI runtime binary:
#
#   benches/runtime-tools.sh [-t TREE] [-r RUNTIME] [-T SECONDS] [-l LOGDIR] [-u] [-U] [TEST ...]
#                                                                          (as root)
#
#   -t TREE     a built runtime-tools tree (default /work/runtime-tools): `runtimetest`,
#               `rootfs-amd64.tar.gz` and `validation/<test>/<test>.t` in it, i.e. after
#               `make runtimetest validation-executables` (GOFLAGS=-mod=vendor GOPROXY=off)
#   -r RUNTIME  the runtime binary (default ./target/release/cagette-runtime; a relative path is
#               taken from the directory the script is called from)
#   -T SECONDS  timeout of one test executable (default 120)
#   -l LOGDIR   where each test's stdout/stderr go (default: a new /tmp/runtime-tools.XXXXXX)
#   -u          run everything in a private mount namespace (`unshare -m`), so that mounts a
#               test leaves behind (e.g. linux_ns_itype's container has no mount namespace)
#               vanish with it
#   -U          with -u: also unmount an empty hybrid cgroup2 at /sys/fs/cgroup/unified inside
#               that namespace (crun 1.8 refuses hybrid cgroups otherwise)
#   TEST ...    test names (validation/<name>); default: the 29 below
#
# The tests are run one by one from TREE (they look for ./runtimetest and ./rootfs-*.tar.gz there)
# as `RUNTIME=<abs path> ./validation/<t>/<t>.t`; each prints TAP on stdout. Per test: the
# `ok N` / `not ok N` counts (skips and TODOs apart), the exit code and the time; then a table
# and a `summary: N passed, N failed` line. A test passes when it exits 0, prints no `not ok`
# (other than `# TODO`), prints a plan `1..N` if it prints anything (runtimetest's exit code is
# never checked: one that died half-way leaves no plan), prints at least as many `ok` as the
# test's code fixes (see min_ok), and, when it prints no `ok` at all,
# prints no YAML diagnostic either:
# prestart_fail / poststart_fail / poststop_fail report failure only as a YAML `error:` under
# plan 1..0, and process_rlimits_fail / process_capabilities_fail print nothing when they pass
# (they exit 1 when the runtime wrongly accepted the config): for a test with empty stdout, the
# harness's "failed to create/start the container" must be on its stderr (any other error, e.g.
# unparsable `state` JSON, would let those two pass).
# Exit status: 0 when every test passed, 1 otherwise, 2 on bad usage.
#
# After each test it unmounts what is still mounted under the bundle dirs (/tmp/ocitest*) that
# appeared during it and removes them (the suite leaks some); at the end it rmdirs the cgroups the
# suite names (cgrouptest, testdir/cgrouptest/container) at the top of each v1 hierarchy if empty.
set -uo pipefail

default_tests=(config_updates_without_affect create default delete_only_create_resources
  delete_resources hostname kill kill_no_effect linux_cgroups_cpus linux_cgroups_pids
  linux_cgroups_relative_cpus linux_cgroups_relative_pids linux_devices linux_masked_paths
  linux_ns_itype linux_ns_nopath linux_ns_path linux_ns_path_type linux_readonly_paths
  linux_sysctl linux_uid_mappings mounts prestart_fail process process_oom_score_adj
  process_rlimits_fail process_user root_readonly_true state)
# Optional extras: hooks_stdin linux_cgroups_devices linux_rootfs_propagation linux_seccomp
#                  poststart_fail poststop_fail process_capabilities_fail

# Oks a passing run prints at least, where the test code fixes the number (the runtimetest-inside
# tests print one per check, which depends on the kernel): some errors (e.g. `state` output that
# is not JSON, in `state`) only drop an `ok` without printing `not ok`.
declare -A min_ok=([config_updates_without_affect]=1 [create]=4 [delete_only_create_resources]=1
  [delete_resources]=4 [hostname]=4 [kill]=5 [kill_no_effect]=1 [linux_cgroups_cpus]=112
  [linux_cgroups_pids]=3 [linux_cgroups_relative_cpus]=7 [linux_cgroups_relative_pids]=3
  [linux_masked_paths]=4 [linux_ns_itype]=7 [linux_ns_nopath]=7 [linux_ns_path]=5
  [linux_ns_path_type]=14 [linux_readonly_paths]=4 [state]=3 [hooks_stdin]=3
  [linux_cgroups_devices]=5 [linux_rootfs_propagation]=4 [linux_seccomp]=2)

tree=${RT_TREE:-/work/runtime-tools}
runtime=${RT_RUNTIME:-./target/release/cagette-runtime}
timeout_s=${RT_TIMEOUT:-120}
logdir=""
use_unshare=0
umount_unified=0
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    -t) tree=$2; shift 2 ;;
    -r) runtime=$2; shift 2 ;;
    -T) timeout_s=$2; shift 2 ;;
    -l) logdir=$2; shift 2 ;;
    -u) use_unshare=1; shift ;;
    -U) umount_unified=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=("${default_tests[@]}")

# Absolute paths, from the caller's directory.
case $runtime in
  /*) ;;
  */*) runtime=$PWD/${runtime#./} ;;
  *) runtime=$(command -v "$runtime" || echo "$PWD/$runtime") ;;
esac
tree=$(cd "$tree" 2>/dev/null && pwd) || { echo "no runtime-tools tree at $tree" >&2; exit 2; }
[ -x "$runtime" ] || { echo "runtime $runtime is not an executable" >&2; exit 2; }
[ -x "$tree/runtimetest" ] || { echo "$tree/runtimetest missing: make runtimetest" >&2; exit 2; }

if [ "$use_unshare" = 1 ] && [ -z "${RT_IN_UNSHARE:-}" ]; then
  args=(-t "$tree" -r "$runtime" -T "$timeout_s")
  [ -n "$logdir" ] && args+=(-l "$logdir")
  [ "$umount_unified" = 1 ] && args+=(-U)
  exec env RT_IN_UNSHARE=1 unshare -m --propagation private -- bash "$0" "${args[@]}" -- "${tests[@]}"
fi
if [ "$umount_unified" = 1 ]; then
  if [ -z "${RT_IN_UNSHARE:-}" ]; then
    echo "-U needs -u (it would unmount the host's cgroup2)" >&2; exit 2
  fi
  if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified || exit 2; fi
fi

[ -n "$logdir" ] || logdir=$(mktemp -d /tmp/runtime-tools.XXXXXX)
mkdir -p "$logdir"

# Bundle dirs created during one test: unmount what a container left mounted under them (e.g.
# linux_ns_itype's, which has no mount namespace of its own), then remove them.
mounts_under() {
  awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2-
}
clean_bundles() {
  local before=$1 d m
  for d in /tmp/ocitest*; do
    [ -d "$d" ] || continue
    grep -qxF "$d" <<<"$before" && continue
    while read -r m; do [ -n "$m" ] && umount -l "$m" 2>/dev/null; done < <(mounts_under "$d")
    if [ -n "$(mounts_under "$d")" ]; then
      cleanup_notes+=("left $d: something is still mounted under it")
      continue
    fi
    rm -rf --one-file-system -- "$d"
  done
}

declare -A res_verdict res_ok res_notok res_skip res_todo res_rc res_time
npass=0; nfail=0
printf 'runtime %s\ntree    %s\nlogs    %s\n\n' "$runtime" "$tree" "$logdir"
cd "$tree" || exit 2
for t in "${tests[@]}"; do
  exe=./validation/$t/$t.t
  if [ ! -x "$exe" ]; then
    res_verdict[$t]=MISSING; res_ok[$t]=0; res_notok[$t]=0; res_skip[$t]=0; res_todo[$t]=0
    res_rc[$t]=-; res_time[$t]=0; nfail=$((nfail + 1))
    printf '%-32s MISSING (%s not built)\n' "$t" "$exe"
    continue
  fi
  before=$(ls -d /tmp/ocitest* 2>/dev/null)
  start=$(date +%s.%N)
  RUNTIME=$runtime timeout -k 10 "$timeout_s" "$exe" </dev/null >"$logdir/$t.out" 2>"$logdir/$t.err"
  rc=$?
  end=$(date +%s.%N)
  cleanup_notes=()
  clean_bundles "$before"
  out=$logdir/$t.out
  ok=$(grep -Ec '^ok [0-9]+' "$out")
  skip=$(grep -Eic '^ok [0-9]+[^#]*# *skip' "$out")
  todo=$(grep -Eic '^not ok [0-9]+[^#]*# *todo' "$out")
  notok=$(( $(grep -Ec '^not ok [0-9]+' "$out") - todo ))
  verdict=PASS
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    verdict=TIMEOUT
  elif [ "$rc" != 0 ] || [ "$notok" -gt 0 ]; then
    verdict=FAIL
  elif [ "$ok" -lt "${min_ok[$t]:-0}" ]; then
    verdict=FAIL   # fewer oks than the test prints when everything works
  elif [ -s "$out" ] && ! grep -qE '^1\.\.[0-9]+' "$out"; then
    verdict=FAIL   # no TAP plan: e.g. runtimetest died half-way (its exit code is not checked)
  elif [ "$ok" -eq 0 ] && grep -q '^ *---' "$out"; then
    verdict=FAIL   # the *_fail hook tests: a YAML "error:" under plan 1..0
  elif [ ! -s "$out" ] && ! grep -qE 'failed to (create|start) the container' "$logdir/$t.err"; then
    # process_rlimits_fail / process_capabilities_fail print nothing when RuntimeInsideValidate
    # failed at any step, also on unparsable `state` output: insist on create or start failing.
    verdict=FAIL
  fi
  if [ "$verdict" = PASS ]; then npass=$((npass + 1)); else nfail=$((nfail + 1)); fi
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  res_verdict[$t]=$verdict; res_ok[$t]=$ok; res_notok[$t]=$notok; res_skip[$t]=$skip
  res_todo[$t]=$todo; res_rc[$t]=$rc; res_time[$t]=$secs
  printf '%-32s %-7s ok %4d  not ok %3d  (skip %d, todo %d)  rc %s  %ss\n' \
    "$t" "$verdict" "$ok" "$notok" "$skip" "$todo" "$rc" "$secs"
  if [ "$verdict" != PASS ]; then
    grep -E '^not ok [0-9]+' "$out" | grep -viE '# *todo' | head -5 | sed 's/^/    /'
    grep -v '^$' "$logdir/$t.err" | head -5 | sed 's/^/    stderr: /'
  fi
  for n in "${cleanup_notes[@]}"; do echo "    ($n)"; done
done

# Cgroups the suite names (cgroups.AbsCgroupPath, RelCgroupPath), when empty.
for h in /sys/fs/cgroup/*/; do
  for c in testdir/cgrouptest/container testdir/cgrouptest testdir cgrouptest; do
    [ -d "$h$c" ] && rmdir "$h$c" 2>/dev/null
  done
done

echo
printf '| %-30s | %-7s | %5s | %6s | %4s | %4s | %3s | %6s |\n' test result ok "not ok" skip todo rc secs
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..32})" ---------  ------: \
  -------: -----: -----: ----: -------:
for t in "${tests[@]}"; do
  printf '| %-30s | %-7s | %5s | %6s | %4s | %4s | %3s | %6s |\n' "$t" "${res_verdict[$t]}" \
    "${res_ok[$t]}" "${res_notok[$t]}" "${res_skip[$t]}" "${res_todo[$t]}" "${res_rc[$t]}" \
    "${res_time[$t]}"
done
echo
echo "summary: $npass passed, $nfail failed"
[ "$nfail" -eq 0 ]
