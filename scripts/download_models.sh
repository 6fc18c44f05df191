#!/usr/bin/env bash
# Download MuseTalk's weights, and the face-parsing and DWPose weights avatar preparation
# uses, into models/ (or MODELS_DIR), and check that they load:
#   ./scripts/download_models.sh [--version 1.5|1.0|all] [--force]
# The files and their sources are listed in models/manifest.json: the HuggingFace
# repositories MuseTalk's own download_weights.sh uses. Files already present are kept
# unless --force. HF_ENDPOINT picks a mirror (MuseTalk's script uses https://hf-mirror.com);
# HF_TOKEN is sent when set. An operator's tool: CI and the tests never run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${MODELS_DIR:-$ROOT/models}"
MANIFEST="$ROOT/models/manifest.json"
HF_ENDPOINT="${HF_ENDPOINT:-https://huggingface.co}"
VERSION=all
FORCE=0

log() { printf '\033[1m[models]\033[0m %s\n' "$*" >&2; }
usage() { sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION="${2:-}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
case "$VERSION" in 1.5|1.0|all) ;; *) echo "--version must be 1.5, 1.0 or all" >&2; exit 2 ;; esac
command -v curl >/dev/null || { echo "curl is needed to download the weights" >&2; exit 1; }

# "path repository path-in-repository alternatives" for every file wanted, from the manifest
# (alternatives: other accepted paths of the same content, comma-separated, or "-").
entries="$(python3 - "$MANIFEST" "$VERSION" <<'PY'
import json
import sys

manifest = json.load(open(sys.argv[1]))
versions = list(manifest["versions"]) if sys.argv[2] == "all" else [sys.argv[2]]
wanted = {"vae", "whisper", *manifest["preparation"]} | {manifest["versions"][v] for v in versions}
for entry in manifest["files"]:
    if entry["component"] in wanted:
        print(entry["path"], entry["repo"], entry["repo_path"], ",".join(entry.get("alternatives", [])) or "-")
PY
)"

auth=()
if [ -n "${HF_TOKEN:-}" ]; then auth=(-H "Authorization: Bearer $HF_TOKEN"); fi

while read -r path repo repo_path alternatives; do
  target="$MODELS_DIR/$path"
  if [ -s "$target" ] && [ "$FORCE" = 0 ]; then
    log "have $path"
    continue
  fi
  have=""
  if [ "$alternatives" != - ] && [ "$FORCE" = 0 ]; then
    for alternative in ${alternatives//,/ }; do
      if [ -s "$MODELS_DIR/$alternative" ]; then have="$alternative"; fi
    done
  fi
  if [ -n "$have" ]; then
    log "have $have (instead of $path)"
    continue
  fi
  mkdir -p "$(dirname "$target")"
  url="$HF_ENDPOINT/$repo/resolve/main/$repo_path"
  log "fetching $path from $url"
  # Resumes a partial download left by an earlier run (-C -).
  curl --fail --location --retry 3 --retry-delay 2 --progress-bar -C - ${auth[@]+"${auth[@]}"} \
    -o "$target.partial" "$url"
  mv "$target.partial" "$target"
done <<< "$entries"

versions=(--version 1.5 --version 1.0)
if [ "$VERSION" != all ]; then versions=(--version "$VERSION"); fi
log "checking: every network is loaded on the CPU (this needs the server's environment)"
source "$ROOT/scripts/setup.sh"
"$VENV/bin/avatar-server" check-models --models-dir "$MODELS_DIR" "${versions[@]}"
