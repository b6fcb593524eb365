#!/bin/sh
# Installs the Debian packages imm needs, only those missing, and says so.
# Usage: sh tools/install-deps.sh demo|test
set -eu

demo_pkgs="pkg-config openssl ca-certificates libssl-dev libcurl4-openssl-dev zlib1g-dev
  lua5.4 liblua5.4-dev lua-cjson"
# love, xvfb, xauth, libgl1-mesa-dri: make love-check runs the LÖVE example on
# a virtual display with mesa's software OpenGL
# redis-server: spec 21 starts its own on loopback (the rate-limit bucket shared across hosts)
# libtsan2: gcc's ThreadSanitizer runtime for make host-check (gcc-12 on amd64
# already pulls it in; named so a minimal install says what it needs)
test_pkgs="$demo_pkgs lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev
  luajit2 libluajit2-5.1-dev
  lua-busted lua-check lua-luv lua-ldoc luarocks valgrind cppcheck curl clang libclang-rt-14-dev libtsan2
  nginx libnginx-mod-http-lua lua-resty-core redis-server
  love xvfb xauth libgl1-mesa-dri"

case "${1:-test}" in
  demo) want=$demo_pkgs ;;
  test) want=$test_pkgs ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

# The official SDK check needs node and npm; any install of them will do
# (Debian's, or NodeSource's nodejs, which bundles npm).
if [ "${1:-test}" = test ]; then
  command -v node >/dev/null 2>&1 || missing="$missing nodejs"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi

if [ -z "$missing" ]; then
  exit 0
fi

echo "imm: installing missing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "imm: not root; run this first:  sudo apt-get install -y$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The tests run nginx themselves, on a free loopback port. Keep the nginx
# package from starting its system service on :80 while it is installed
# (policy-rc.d exit 101 = "not now"), unless the machine already has a policy.
case " $missing " in
  *" nginx "*|*" redis-server "*)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      echo "imm: nginx and redis-server are for the tests only; their system services are not started"
    fi ;;
esac
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "imm: packages installed"
