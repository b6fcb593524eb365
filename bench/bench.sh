#!/bin/sh
# make bench: everything the benchmark needs, then bench/run.py.
#
#   sh bench/bench.sh [run.py options]     (from anywhere; `make bench BENCH_ARGS=...`)
#
# 1. Installs the Debian packages it is missing with apt-get, and says which:
#    nginx-light, Lua 5.4 and LuaJIT with their headers, lua-cjson, libcurl,
#    OpenSSL, a C compiler, valgrind (the latency part's instruction counts),
#    and node/npm when there is no node.
# 2. Builds imm for Lua 5.4 and LuaJIT (make build), and the limit loops
#    build/bench/curl_loop, curl_cjson_loop (Lua 5.4) and curl_cjson_jit_loop
#    (LuaJIT) from bench/curl_loop.c, and build/bench/delay_proxy.
# 3. Installs the pinned Node SDK into bench/node/node_modules (npm ci, from
#    bench/node/package-lock.json) when it is missing or older than the lock.
# 4. Runs python3 bench/run.py with the options given: the loopback table,
#    then the latency table (bench/latency/; --latency-only runs only that).
# Nothing but 127.0.0.1, the Debian mirror (apt) and the npm registry is contacted.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
make=${MAKE:-make}

say() { echo "bench: $*"; }

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

updated=
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: not root; run this first:  sudo apt-get install -y --no-install-recommends $*" >&2
    return 1
  fi
  if [ -z "$updated" ]; then
    apt-get update -qq || return 1
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. packages -------------------------------------------------------------
want="pkg-config gcc make openssl ca-certificates libssl-dev libcurl4-openssl-dev zlib1g-dev
  lua5.4 liblua5.4-dev lua-cjson luajit2 libluajit2-5.1-dev valgrind"
missing=""
for p in $want; do
  installed "$p" || missing="$missing $p"
done
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
  say "installing missing Debian packages:$missing"
  # shellcheck disable=SC2086
  apt_install $missing
fi

# nginx-light: on Debian 12 it is nginx plus the echo module, and it installs
# alongside the nginx package the test suite uses (same binary). If it cannot
# be installed here, the nginx already present serves the pages just as well.
if ! installed nginx-light; then
  say "installing nginx-light"
  if apt_install nginx-light; then
    say "nginx-light installed"
  elif command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    say "nginx-light could not be installed; using the nginx that is present"
  else
    echo "bench: no nginx; install nginx-light (or nginx)" >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"

# --- 2. builds ---------------------------------------------------------------
say "building imm for Lua 5.4 and LuaJIT"
$make --no-print-directory -s build LUA=lua5.4 BUILD=build/lua5.4
$make --no-print-directory -s build LUA=luajit BUILD=build/luajit

say "building the limit loops and the delaying proxy into build/bench/"
mkdir -p build/bench
cc=${CC:-cc}
warn="-Wall -Wextra -Wshadow -Wstrict-prototypes"
# the latency benchmark's delaying proxy (bench/latency/delay_proxy.c)
# shellcheck disable=SC2086
$cc -O2 -g -std=c99 $warn bench/latency/delay_proxy.c -o build/bench/delay_proxy
# shellcheck disable=SC2046,SC2086
$cc -O2 -g -std=c99 $warn $(pkg-config --cflags libcurl) bench/curl_loop.c \
  -o build/bench/curl_loop $(pkg-config --libs libcurl)
# shellcheck disable=SC2046,SC2086
$cc -O2 -g -std=c99 $warn -DBENCH_CJSON $(pkg-config --cflags libcurl lua5.4) bench/curl_loop.c \
  -o build/bench/curl_cjson_loop $(pkg-config --libs libcurl lua5.4)
# shellcheck disable=SC2046,SC2086
$cc -O2 -g -std=c99 $warn -DBENCH_CJSON -DBENCH_LUAJIT $(pkg-config --cflags libcurl luajit) bench/curl_loop.c \
  -o build/bench/curl_cjson_jit_loop $(pkg-config --libs libcurl luajit)

# --- 3. the Node SDK ---------------------------------------------------------
if [ ! -f bench/node/node_modules/.package-lock.json ] ||
   [ -n "$(find bench/node/package-lock.json -newer bench/node/node_modules/.package-lock.json)" ]; then
  say "installing the pinned Node SDK (npm ci in bench/node)"
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- 4. run ------------------------------------------------------------------
exec python3 bench/run.py "$@"
