#!/usr/bin/env bash
# Installs the MLflow pinned in e2e/tools/mlflow-requirements.txt into its own venv in the
# cache (outside the clone and outside the project's .venv) and prints the venv's bin folder.
# A no-op when already installed; a venv without its stamp (an install that was cut short) is
# rebuilt from scratch. Progress goes to stderr, the bin path alone to stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
reqs="$here/mlflow-requirements.txt"
TMO_CACHE=${TMO_CACHE:-$HOME/.cache/tmo}
version=$(sed -n 's/^mlflow\(\[[a-z,]*\]\)\{0,1\}==\([^ ;#]*\).*/\2/p' "$reqs")
[ -n "$version" ] || { echo "error: no mlflow==VERSION pin in $reqs" >&2; exit 1; }
venv="$TMO_CACHE/mlflow-$version"
stamp="$venv/.tmo-installed"
want=$(sha256sum "$reqs" | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$venv/bin/mlflow" ]; then
  python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null || { echo "error: $python is not installed (needed for MLflow $version)" >&2; exit 1; }
  echo ">> installing MLflow $version into $venv (a few minutes the first time)" >&2
  rm -rf "$venv"
  mkdir -p "$TMO_CACHE"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" >&2
  "$venv/bin/mlflow" --version >&2
  echo "$want" >"$stamp"
  for old in "$TMO_CACHE"/mlflow-*; do [ "$old" = "$venv" ] || rm -rf "$old"; done
fi
echo "$venv/bin"
