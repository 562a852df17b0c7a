#!/usr/bin/env bash
# buf breaking against the proto this branch started from (its merge-base with main): the spool replays
# requests serialised by the previous release, so a field number or type may never change.
# The base is exported with `git archive` rather than buf's `.git#ref=` input, which needs a plain
# clone: this works the same in a fresh clone (CI), a linked worktree and a shallow checkout of main.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=${BUF:?set BUF to the buf command}
base=""
for ref in main origin/main; do
  if base=$(git merge-base HEAD "$ref" 2>/dev/null); then break; fi
done
if [ -z "$base" ]; then
  echo "proto-check: no main or origin/main to compare the proto against" >&2
  exit 1
fi
against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$base" buf.yaml proto | tar -x -C "$against"
$buf breaking --against "$against"
