#!/bin/sh
# Makes a minimal busybox rootfs in DIR (used by the tests and the benchmarks).
# Needs busybox-static (apt-get install busybox-static).
set -eu
dir=${1:?usage: make-busybox-rootfs.sh DIR}
bb=$(command -v busybox) || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
file "$bb" 2>/dev/null | grep -q "dynamically linked" && { echo "$bb is dynamic: install busybox-static" >&2; exit 1; }
mkdir -p "$dir"/bin "$dir"/proc "$dir"/dev "$dir"/sys "$dir"/tmp "$dir"/etc "$dir"/root
cp "$bb" "$dir"/bin/busybox
for app in $("$bb" --list); do
  [ -e "$dir/bin/$app" ] || ln -s busybox "$dir/bin/$app"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$dir"/etc/passwd
echo 'root:x:0:' > "$dir"/etc/group
