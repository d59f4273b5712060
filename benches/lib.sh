# Shared by the bench scripts (sourced, from the project root): the cached multi-layer bench
# image, and a loopback docker-registry.

# bench_image LAYER-DIRS...: sets $image to the OCI layout of benches/make-bench-image.py made
# from those host directories (GNU tar + gzip -6), built once and kept in target/bench-image.
bench_image() {
  local key
  key=$(sha256sum < benches/make-bench-image.py | cut -c1-12)-$(echo "$*" | sha256sum | cut -c1-8)
  image=$PWD/target/bench-image/$key
  if [ ! -f "$image/index.json" ]; then
    rm -rf "$PWD/target/bench-image" && mkdir -p "$image"
    echo "building the bench image from $* ..." >&2
    python3 benches/make-bench-image.py "$image" "$@"
  fi
}

# start_registry DIR: Debian's docker-registry on a free 127.0.0.1 port, storing in DIR/registry
# and logging to DIR/registry.log; sets $reg (host:port) and $reg_pid, and returns once it
# accepts connections (kill $reg_pid to stop it).
start_registry() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  reg=127.0.0.1:$port
  cat > "$dir/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: $reg
YML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "docker-registry did not start: $(cat "$dir/registry.log")" >&2
  return 1
}
