#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One include-guard style (README "Source layout"): every header of the tree
# opens with #ifndef/#define PINION_<DIR>_<FILE>_H, DIR its top-level
# directory, and closes with #endif; lib/pinion-device.h, installed, has
# PINION_DEVICE_H.  A guard copied with its header keeps the old file's name
# and silently hides one of the two; this catches it.
#
#   bash tests/lint/include_guards.sh [SOURCE_DIR]
set -euo pipefail

root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t headers < <(git ls-files '*.h')
else
    mapfile -t headers < <(find . -name '*.h' -not -path './build*' | sed 's|^\./||' | sort)
fi
[ ${#headers[@]} -gt 0 ] || { echo "include_guards: no headers under $root" >&2; exit 1; }

bad=0
declare -A seen=()
for h in "${headers[@]}"; do
    if [ "$h" = lib/pinion-device.h ]; then
        want=PINION_DEVICE_H
    else
        dir=${h%%/*}
        file=$(basename "$h" .h)
        want=PINION_$(printf '%s_%s' "$dir" "$file" | tr 'a-z.-' 'A-Z__')_H
    fi
    # The first two preprocessor lines and the last one.
    mapfile -t pp < <(grep -E '^[[:space:]]*#' "$h")
    if [ "${pp[0]:-}" != "#ifndef $want" ] || [ "${pp[1]:-}" != "#define $want" ]; then
        echo "include_guards: $h: expected '#ifndef $want' then '#define $want', found '${pp[0]:-}' / '${pp[1]:-}'" >&2
        bad=1
    fi
    last=${pp[${#pp[@]}-1]:-}
    if ! [[ $last =~ ^#endif([[:space:]]*/\*[[:space:]]*$want[[:space:]]*\*/)?$ ]]; then
        echo "include_guards: $h: last preprocessor line is '$last', not '#endif'" >&2
        bad=1
    fi
    if [ -n "${seen[$want]:-}" ]; then
        echo "include_guards: $h and ${seen[$want]} share the guard $want" >&2
        bad=1
    fi
    seen[$want]=$h
done
[ "$bad" -eq 0 ] || exit 1
echo "include_guards: ${#headers[@]} headers, one guard style"
