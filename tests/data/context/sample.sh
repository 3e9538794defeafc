#!/usr/bin/env bash
set -euo pipefail
source ./lib/common.sh

USAGE="usage: backup.sh SRC DEST
copies SRC into a dated folder under DEST"

log() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

check_args() {
  if [ "$#" -ne 2 ]; then
    echo "$USAGE" >&2
    exit 2
  fi
}

backup() {
  local src="$1" dest="$2"
  local stamp
  stamp="$(date +%Y-%m-%d)"
  mkdir -p "$dest/$stamp"
  cp -r "$src" "$dest/$stamp/"
  log "copied $src"
}

main() {
  check_args "$@"
  backup "$1" "$2"
}

main "$@"
