#!/usr/bin/env bash
# Builds every tool pinned in e2e/tools/*/go.mod into the cache, outside the clone, and prints
# the folder holding them (progress goes to stderr). Each tool's program is the package its
# tools.go imports; the binary is named after that package's last path element:
#   actionlint      (tests/test_workflows.py)
#   versitygw       an S3-compatible server (tests/runtime/test_sources_cloud.py)
#   fake-gcs-server a GCS emulator (tests/runtime/test_sources_cloud.py)
# A no-op when already built; safe to run concurrently (one build at a time per cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TMO_CACHE=${TMO_CACHE:-$HOME/.cache/tmo}
sum=$(cat "$here"/*/go.mod "$here"/*/go.sum "$here"/*/tools.go "$0" | sha256sum | cut -c1-10)
bin="$TMO_CACHE/tools-$sum/bin"

program() { # the package a tool's tools.go imports
  sed -n 's/^import _ "\(.*\)"$/\1/p' "$1/tools.go"
}

missing=()
for dir in "$here"/*/; do
  dir=${dir%/}
  pkg=$(program "$dir")
  [ -n "$pkg" ] || { echo "error: $dir/tools.go imports no program" >&2; exit 1; }
  [ -x "$bin/${pkg##*/}" ] || missing+=("$dir")
done

if [ ${#missing[@]} -gt 0 ]; then
  command -v go >/dev/null || { echo "error: Go is not installed (needed to build e2e/tools)" >&2; exit 1; }
  mkdir -p "$bin"
  exec 9>"$TMO_CACHE/tools.lock"
  flock 9 # another build of the same cache finishes first; what it built is then skipped
  have=$(go env GOVERSION) # go1.26.8
  have=${have#go}
  for dir in "${missing[@]}"; do
    pkg=$(program "$dir")
    name=${pkg##*/}
    [ -x "$bin/$name" ] && continue
    want=$(awk '$1=="go"{print $2; exit}' "$dir/go.mod")
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
      echo "error: $dir/go.mod needs Go $want; installed is $have" >&2
      exit 1
    fi
    version=$(awk -v m="${pkg%/cmd/*}" '($1==m || $2==m) {print ($1==m ? $2 : $3); exit}' "$dir/go.mod")
    echo ">> building $name ${version:-} into $bin" >&2
    start=$SECONDS
    (cd "$dir" && GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local \
      go build -trimpath -ldflags="-s -w" -o "$bin/$name.tmp" "$pkg")
    mv "$bin/$name.tmp" "$bin/$name"
    echo ">> built $name in $((SECONDS - start))s" >&2
  done
  for old in "$TMO_CACHE"/tools-*; do [ "$old" = "$TMO_CACHE/tools-$sum" ] || rm -rf "$old"; done
fi
echo "$bin"
