#!/bin/sh
# Part of `make rockspec-check`: what a new user and a packager do, as written.
#  1. README.md's LuaRocks lines for Lua 5.4, run as they stand in a clean
#     shell whose HOME is a scratch directory, then `require "imm"` on lua5.4.
#  2. `make dist`, then `luarocks install` of the .src.rock with no network.
#  3. `make install` then `make uninstall` under one DESTDIR: nothing is left.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(sed -n 's/^local VERSION = "\(.*\)"$/\1/p' "$top/lua/imm/client.lua")
require_imm='local imm = require "imm"; assert(require("imm.core")._VERSION == imm._VERSION); print(imm._VERSION)'

# 0. NOTICE names the sources of what was taken, as the files themselves name them
sdk=$(sed -n 's/^ *"source": "[^"]*\(@alicloud\/imm20200930 [0-9.]*[0-9]\).*/\1/p' "$top/api/imm-2020-09-30.json")
util=$(sed -n 's/.*Computed by the official \(@alicloud\/openapi-util [0-9.]*[0-9]\).*/\1/p' "$top/spec/fixtures/signing.json")
for f in LICENSE NOTICE AUTHORS; do [ -s "$top/$f" ] || { echo "imm: dist-check FAILED: no $f" >&2; exit 1; }; done
for s in "$sdk" "$util" "api/imm-2020-09-30.json" "api/task-types.json" "spec/fixtures/signing.json" "Apache License"; do
  [ -n "$s" ] && grep -qF "$s" "$top/NOTICE" || { echo "imm: dist-check FAILED: NOTICE does not name '$s'" >&2; exit 1; }
done
grep -q "the imm authors" "$top/LICENSE" && grep -q "^[^#].*<.*@.*>$" "$top/AUTHORS" ||
  { echo "imm: dist-check FAILED: AUTHORS lists none of the imm authors LICENSE names" >&2; exit 1; }
echo "imm: NOTICE names $sdk, $util and the files taken from them; AUTHORS lists the imm authors"

# 1. the first code block under "## Install": its luarocks and eval lines for 5.4
awk '/^## Install/ { s = 1 } s && /^```sh/ { b = 1; next } b && /^```/ { exit } b' "$top/README.md" | grep -E '^(luarocks|eval).*5\.4' | sed 's/ *#.*$//' >"$work/readme.sh" || true
echo "imm: README.md's install lines for Lua 5.4:"
sed 's/^/  /' "$work/readme.sh"
grep -q '^luarocks ' "$work/readme.sh" && grep -q '^eval ' "$work/readme.sh" ||
  { echo "imm: dist-check FAILED: README.md's Install block shows no luarocks ... 5.4 and eval line" >&2; exit 1; }
mkdir -p "$work/home" "$work/src"
(cd "$top" && git ls-files --cached --others --exclude-standard | while IFS= read -r f; do
  [ -f "$f" ] && printf '%s\n' "$f"; done | tar -cf - -T -) | tar -xf - -C "$work/src"
(cd "$work/src" && env -i PATH="$PATH" HOME="$work/home" sh -ec "
  $(cat "$work/readme.sh")
  lua5.4 -e '$require_imm'" >"$work/readme.log" 2>&1) ||
  { cat "$work/readme.log"; echo "imm: dist-check FAILED: README.md's install lines do not give lua5.4 a working imm" >&2; exit 1; }
echo "imm: README.md's install lines: lua5.4 loads imm $(tail -1 "$work/readme.log") from $work/home"

# 2. make dist, installed offline (no network namespace at all where we may make one)
make -C "$top" --no-print-directory dist DIST_DIR="$work/dist" >"$work/dist.log" 2>&1 ||
  { cat "$work/dist.log"; echo "imm: dist-check FAILED: make dist" >&2; exit 1; }
rock="$work/dist/imm-$version-1.src.rock"
unzip -l "$rock" | grep -q " imm/NOTICE$" && unzip -l "$rock" | grep -q " imm/AUTHORS$" ||
  { echo "imm: dist-check FAILED: the rock lacks NOTICE or AUTHORS" >&2; exit 1; }
offline=
unshare -n true 2>/dev/null && offline="unshare -n"
unshare -rn true 2>/dev/null && [ -z "$offline" ] && offline="unshare -rn"
(cd "$work" && env -i PATH="$PATH" HOME="$work/home" $offline luarocks --lua-version=5.4 install \
   --tree="$work/tree-dist" --deps-mode=none "$rock" >"$work/install-rock.log" 2>&1) ||
  { cat "$work/install-rock.log"; echo "imm: dist-check FAILED: luarocks install $rock" >&2; exit 1; }
(cd "$work" && env -i PATH="$PATH" HOME="$work" sh -ec "
  eval \"\$(luarocks --lua-version=5.4 --tree='$work/tree-dist' path)\"
  lua5.4 -e '$require_imm'
  lua5.4 -e 'assert(package.searchpath(\"imm\", package.path):find(\"$work/tree-dist\", 1, true))'") ||
  { echo "imm: dist-check FAILED: the installed rock does not load" >&2; exit 1; }
echo "imm: make dist: $(basename "$rock") installs (${offline:-network not isolated: no unshare}) and loads"

# 3. make install, make uninstall
dest="$work/destdir"
for t in install uninstall; do
  make -C "$top" --no-print-directory $t LUA=lua5.4 PREFIX=/usr DESTDIR="$dest" >"$work/$t.log" 2>&1 ||
    { cat "$work/$t.log"; echo "imm: dist-check FAILED: make $t" >&2; exit 1; }
  [ $t = uninstall ] || [ -n "$(find "$dest" -type f)" ] || { echo "imm: make install installed nothing" >&2; exit 1; }
done
left=$(find "$dest" -mindepth 1 \( -type f -o -type l -o -name '*imm*' \) -print)
[ -z "$left" ] || { echo "imm: dist-check FAILED: make uninstall left:" >&2; echo "$left" >&2; exit 1; }
echo "imm: make uninstall removes all that make install put under DESTDIR"

# 4. make release, in a clone of the last commit (this repository is never tagged)
git clone -q "$top" "$work/clone"
cd "$work/clone"
git config user.email release-check@imm.invalid && git config user.name "imm release-check"
# the releases refused before anything is written
for bad in "VERSION=9.9" "VERSION=v9.9.9" "VERSION=9.9.9"; do
  if make --no-print-directory release $bad RELEASE_CHECK= >"$work/release.log" 2>&1; then
    cat "$work/release.log"; echo "imm: dist-check FAILED: make release $bad did not refuse" >&2; exit 1
  fi
  [ -z "$(git status --porcelain)" ] || { echo "imm: dist-check FAILED: a refused release changed the tree" >&2; exit 1; }
done
printf '\n## [9.9.9] - Unreleased\n\n- release-check\n' >>CHANGELOG.md
touch untracked-file
make --no-print-directory release VERSION=9.9.9 RELEASE_CHECK= >"$work/release.log" 2>&1 &&
  { echo "imm: dist-check FAILED: make release ran on an unclean tree" >&2; exit 1; }
grep -q "the tree has changes" "$work/release.log" || { cat "$work/release.log"; exit 1; }
rm untracked-file && git commit -qam "changelog 9.9.9"
make --no-print-directory release VERSION=9.9.9 RELEASE_CHECK= >"$work/release.log" 2>&1 ||
  { cat "$work/release.log"; echo "imm: dist-check FAILED: make release VERSION=9.9.9" >&2; exit 1; }
git rev-parse -q --verify refs/tags/v9.9.9 >/dev/null || { echo "imm: dist-check FAILED: no tag v9.9.9" >&2; exit 1; }
[ "$(git describe --tags --exact-match HEAD)" = v9.9.9 ] && [ -z "$(git status --porcelain)" ] &&
  grep -q '^local VERSION = "9.9.9"$' lua/imm/client.lua && grep -q '^version = "9.9.9-1"$' rockspecs/imm-9.9.9-1.rockspec &&
  grep -q '^  tag = "v9.9.9",$' rockspecs/imm-9.9.9-1.rockspec && grep -q "^## \[9.9.9\] - 20[0-9-]*$" CHANGELOG.md &&
  [ -f build/dist/imm-9.9.9-1.src.rock ] ||
  { cat "$work/release.log"; echo "imm: dist-check FAILED: make release VERSION=9.9.9 did not write, tag and pack" >&2; exit 1; }
make --no-print-directory release VERSION=9.9.9 RELEASE_CHECK= >"$work/release.log" 2>&1 &&
  { echo "imm: dist-check FAILED: make release ran twice for one tag" >&2; exit 1; }
echo "imm: make release VERSION=9.9.9 (in a clone): refuses bad versions, an unclean tree and a second run; writes, tags v9.9.9, packs"
