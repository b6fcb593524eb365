#!/bin/sh
# Packs imm-VERSION-1.src.rock from the working tree (tracked and untracked
# files, not ignored ones), the way `luarocks pack` packs a git rockspec: the
# release rockspec beside the source directory named after the repository
# ("imm", from source.url). LuaRocks builds such a rock from the directory it
# holds and never fetches, so `luarocks install` of the file works offline.
# Usage: sh tools/dist.sh VERSION OUTDIR
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
version=$1
out=$2
spec="$top/rockspecs/imm-$version-1.rockspec"
[ -f "$spec" ] || { echo "imm: dist: no rockspecs/imm-$version-1.rockspec (make release VERSION=$version writes it)" >&2; exit 1; }
# the directory LuaRocks changes into: the last part of source.url, less .git
dir=$(sed -n 's|^ *url = "[^"]*/\([^/"]*\)".*|\1|p' "$spec" | head -1)
dir=${dir%.git}
[ -n "$dir" ] || { echo "imm: dist: no source.url in $spec" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$dir" "$out"
cd "$top"
# files deleted in the tree but still in the index are left out
git ls-files --cached --others --exclude-standard | sort -u | while IFS= read -r f; do
  [ -f "$f" ] && printf '%s\n' "$f"
done | tar -cf - -T - | tar -xf - -C "$work/$dir"
cp "$spec" "$work/imm-$version-1.rockspec"
rock="$(cd "$out" && pwd)/imm-$version-1.src.rock"
rm -f "$rock"
(cd "$work" && zip -qr "$rock" "imm-$version-1.rockspec" "$dir")
echo "imm: $rock"
