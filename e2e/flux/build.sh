#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from their upstream modules, pinned in
# e2e/flux/*/go.mod and verified against go.sum, into the cache outside the clone (keyed by the
# pins), and prints the folder holding them (progress goes to stderr). Used by e2e/test_gitops.py.
# A no-op when already built; safe to run concurrently (one build at a time per cache).
# Not under e2e/tools/: e2e/tools/build.sh builds every folder there into one shared bin, and
# these two are big (a cold build takes minutes), needed by one test only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TMO_CACHE=${TMO_CACHE:-$HOME/.cache/tmo}
controllers="source-controller kustomize-controller"
version_of() { awk -v m="github.com/fluxcd/$1" '$1=="require" && $2==m {print $3; exit} $1==m {print $2; exit}' "$here/$1/go.mod"; }
# The key: every pin (go.mod less its comments, go.sum) and this script's build commands.
sum=$(cat "$here"/*/go.mod "$here"/*/go.sum "$0" | sed '/^\/\//d' | sha256sum | cut -c1-10)
bin="$TMO_CACHE/flux-source-$(version_of source-controller)-kustomize-$(version_of kustomize-controller)-$sum/bin"

built() { for c in $controllers; do [ -x "$bin/$c" ] || return 1; done; }
if ! built; then
  command -v go >/dev/null || { echo "error: Go is not installed (needed to build Flux's controllers)" >&2; exit 1; }
  mkdir -p "$bin"
  exec 9>"$TMO_CACHE/flux.lock"
  flock 9 # another build of the same cache finishes first; what it built is then skipped
  have=$(go env GOVERSION) # go1.26.8
  have=${have#go}
  for c in $controllers; do
    [ -x "$bin/$c" ] && continue
    want=$(awk '$1=="go"{print $2; exit}' "$here/$c/go.mod")
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
      echo "error: $here/$c/go.mod needs Go $want; installed is $have" >&2
      exit 1
    fi
    echo ">> building $c $(version_of "$c") into $bin" >&2
    start=$SECONDS
    (cd "$here/$c" && GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 \
      go build -trimpath -ldflags="-s -w" -o "$bin/$c.tmp" "github.com/fluxcd/$c")
    mv "$bin/$c.tmp" "$bin/$c"
    echo ">> built $c in $((SECONDS - start))s" >&2
  done
  for old in "$TMO_CACHE"/flux-*/; do
    old=${old%/}
    [ "$old" = "${bin%/bin}" ] || rm -rf "$old"
  done
fi
echo "$bin"
