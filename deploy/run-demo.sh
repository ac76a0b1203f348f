#!/usr/bin/env bash
# Runs the daemon on the embedded demo data, on a fresh Debian/Ubuntu machine too: the build
# needs libclang (bindgen, for PostgreSQL's own parser in the policy's verifier), installed
# here if missing. Extra arguments go to `sluice serve --demo` (for example `--listen`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq libclang-dev
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq libclang-dev
  fi
fi
exec cargo run -p sluice -- serve --demo "$@"
