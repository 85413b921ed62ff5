#!/usr/bin/env bash
# Regenerate schema/compiled/<set>.bin from schema/capnp/<set>/**.capnp.
#
# Each output is one CodeGeneratorRequest (what `capnp compile -o-` writes)
# holding every .capnp file of the set as a requested file. The invocation is
# fixed so the bytes are reproducible: run from the repository root, files in
# byte-wise sorted order, import path and src-prefix both the set directory (so
# display names come out as `mp/proxy.capnp`, `init.capnp`, ...).
# schema/tests/layout.rs repeats this exact invocation to detect drift.
#
# Usage: bash schema/compile.sh
set -euo pipefail
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CAPNP=${CAPNP:-capnp}
command -v "$CAPNP" >/dev/null || { echo "compile.sh: '$CAPNP' not found (apt-get install capnproto)" >&2; exit 1; }
echo "using $("$CAPNP" --version)" >&2

mkdir -p schema/compiled
for set in mpexample v30 v31 master; do
    dir="schema/capnp/$set"
    mapfile -t files < <(cd "$dir" && find . -type f -name '*.capnp' | sed 's|^\./||' | sort)
    [ "${#files[@]}" -gt 0 ] || { echo "compile.sh: no .capnp files in $dir" >&2; exit 1; }
    out="schema/compiled/$set.bin"
    "$CAPNP" compile -I "$dir" --src-prefix="$dir" -o- "${files[@]/#/$dir/}" > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "$out: ${files[*]}" >&2
done
