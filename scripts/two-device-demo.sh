#!/usr/bin/env bash
# Two devices on this machine keep one folder in sync by exchanging git bundles by hand, the way the
# daemon will do it over the network: edits on both sides, a conflict, and both ending on one head.
set -euo pipefail
ocsync=${OCSYNC:-ocsync}
command -v "$ocsync" >/dev/null || ocsync="$(dirname "$0")/../.venv/bin/ocsync"
work=$(mktemp -d "${TMPDIR:-/tmp}/ocsync-demo.XXXXXX")
laptop=(--home "$work/laptop-home")
desktop=(--home "$work/desktop-home")

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Two devices, each with its own key"
run "$ocsync" "${laptop[@]}" id --rename Laptop
run "$ocsync" "${desktop[@]}" id --rename Desktop

step "The laptop shares a folder: one commit per file"
mkdir -p "$work/laptop/notes"
printf 'milk\neggs\n' >"$work/laptop/notes/shopping.txt"
printf 'ocsync demo\n' >"$work/laptop/README"
run "$ocsync" "${laptop[@]}" init "$work/laptop"

step "The desktop receives the whole history as a bundle"
run "$ocsync" "${laptop[@]}" bundle create "$work/laptop" -o "$work/full.bundle"
mkdir -p "$work/desktop"
run "$ocsync" "${desktop[@]}" init "$work/desktop"
run "$ocsync" "${desktop[@]}" bundle apply "$work/desktop" "$work/full.bundle" --from laptop

step "Both edit the same file before they next meet"
printf 'milk\neggs\nbread\n' >"$work/laptop/notes/shopping.txt"
sleep 1
printf 'milk\neggs\ncoffee\n' >"$work/desktop/notes/shopping.txt"
printf 'call mum\n' >"$work/desktop/todo.txt"
run "$ocsync" "${laptop[@]}" commit "$work/laptop"
run "$ocsync" "${desktop[@]}" commit "$work/desktop"

step "They exchange only what the other lacks (thin bundles), both ways"
laptop_had=$(git -C "$work/desktop" rev-parse refs/peers/laptop/main)
run "$ocsync" "${laptop[@]}" bundle create "$work/laptop" --since "$laptop_had" -o "$work/to-desktop.bundle"
run "$ocsync" "${desktop[@]}" bundle create "$work/desktop" --since "$laptop_had" -o "$work/to-laptop.bundle"
run "$ocsync" "${desktop[@]}" bundle apply "$work/desktop" "$work/to-desktop.bundle" --from laptop
run "$ocsync" "${laptop[@]}" bundle apply "$work/laptop" "$work/to-laptop.bundle" --from desktop

step "Same head on both, nothing lost: the loser of the conflict is kept as a copy"
printf 'laptop:  %s\ndesktop: %s\n' "$(git -C "$work/laptop" rev-parse main)" "$(git -C "$work/desktop" rev-parse main)"
run ls "$work/laptop/notes"
run "$ocsync" "${laptop[@]}" log "$work/laptop/notes/shopping.txt"

step "Restore one file without touching any other"
run "$ocsync" "${laptop[@]}" restore "$work/laptop/notes/shopping.txt"
run cat "$work/laptop/notes/shopping.txt"

printf '\nThe two folders are %s/laptop and %s/desktop; remove %s when done.\n' "$work" "$work" "$work"
