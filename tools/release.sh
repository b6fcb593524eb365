#!/bin/sh
# make release VERSION=x.y.z: checks, writes the version, tags and packs.
#  - refuses a malformed version, a tree with any change or untracked file,
#    an existing tag, and a CHANGELOG.md without a "## [x.y.z]" section;
#  - writes the version into lua/imm/client.lua, rockspecs/imm-x.y.z-1.rockspec
#    (from the newest rockspec there) and dates the CHANGELOG section;
#  - runs spec 02 (the rockspec, the Lua and the C module agree) and then
#    `make $RELEASE_CHECK` (default: check, the specs on Lua 5.4 and lint);
#    on failure it puts the three files back and stops;
#  - commits them, tags vx.y.z and runs make dist.
# Nothing is pushed or uploaded: that is for a person to do.
# Usage: sh tools/release.sh VERSION [CHECK-TARGETS]
set -eu
v=$1
checks=${2-check}
cd "$(dirname "$0")/.."
fail() { echo "imm: release: $*" >&2; exit 1; }
echo "$v" | grep -Eqx '[0-9]+\.[0-9]+\.[0-9]+' || fail "VERSION=x.y.z, not '$v'"
[ -z "$(git status --porcelain)" ] || fail "the tree has changes or untracked files (git status): commit them first"
! git rev-parse -q --verify "refs/tags/v$v" >/dev/null || fail "the tag v$v exists already"
grep -q "^## \[$v\]" CHANGELOG.md || fail "CHANGELOG.md has no '## [$v]' section: write it first"
old=$(sed -n 's/^local VERSION = "\(.*\)"$/\1/p' lua/imm/client.lua)
newest=$(ls rockspecs/imm-*-1.rockspec | sort -V | tail -1)
spec="rockspecs/imm-$v-1.rockspec"
from=$(basename "$newest" -1.rockspec)
from=${from#imm-}
ere() { printf '%s' "$1" | sed 's/\./\\./g'; }
sed "s/$(ere "$from")/$v/g" "$newest" >"$spec.tmp" && mv "$spec.tmp" "$spec"
sed -i "s/^local VERSION = \"$(ere "$old")\"$/local VERSION = \"$v\"/" lua/imm/client.lua
sed -i "s/^## \[$(ere "$v")\].*/## [$v] - $(date -u +%Y-%m-%d)/" CHANGELOG.md
restore() {
  git checkout -q -- lua/imm/client.lua CHANGELOG.md
  git ls-files --error-unmatch "$spec" >/dev/null 2>&1 && git checkout -q -- "$spec" || rm -f "$spec"
  fail "$1; lua/imm/client.lua, CHANGELOG.md and $spec are put back"
}
echo "imm: release $v: version consistency (spec 02)"
make --no-print-directory unit LUA=lua5.4 SPECS=spec/02_core_spec.lua VERSION="$v" || restore "spec 02 failed"
if [ -n "$checks" ]; then
  echo "imm: release $v: make $checks"
  make --no-print-directory $checks VERSION="$v" || restore "make $checks failed"
fi
git add lua/imm/client.lua CHANGELOG.md "$spec"
git commit -q -m "imm $v"
git tag -a "v$v" -m "imm $v"
sh tools/dist.sh "$v" build/dist
echo "imm: release $v tagged v$v; to publish: git push --follow-tags, then luarocks upload $spec"
