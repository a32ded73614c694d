#!/usr/bin/env bash
# Builds the developer tools pinned in e2e/tools/*/go.mod (today: actionlint) into the cache,
# outside the clone, and prints the folder holding them. A no-op when already built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TMO_CACHE=${TMO_CACHE:-$HOME/.cache/tmo}
sum=$(cat "$here"/*/go.mod "$here"/*/go.sum "$0" | sha256sum | cut -c1-10)
bin="$TMO_CACHE/tools-$sum/bin"
if [ ! -x "$bin/actionlint" ]; then
  command -v go >/dev/null || { echo "error: Go is not installed (needed to build actionlint)" >&2; exit 1; }
  echo ">> building actionlint $(awk '$1=="require"{print $3; exit}' "$here/actionlint/go.mod") into $bin" >&2
  mkdir -p "$bin"
  (cd "$here/actionlint" && GOFLAGS=-mod=readonly go build -trimpath -ldflags="-s -w" \
    -o "$bin/actionlint.tmp" github.com/rhysd/actionlint/cmd/actionlint)
  mv "$bin/actionlint.tmp" "$bin/actionlint"
  for old in "$TMO_CACHE"/tools-*; do [ "$old" = "$TMO_CACHE/tools-$sum" ] || rm -rf "$old"; done
fi
echo "$bin"
