#!/usr/bin/env bash
# Set up the browser tier of the tests (tests/browser/): Debian's chromium and the
# npm package playwright-core, pinned by tests/browser/package-lock.json.
#
# Idempotent: does nothing that is already done, and says what it did.
# Never lets playwright download a browser: the tests drive /usr/bin/chromium.
#   tools/setup_browser.sh            # from the repository root (make test calls it)
# Needs root (or sudo) for apt-get the first time; node >= 20 and npm for the rest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_DIR="$ROOT/tests/browser"
CHROMIUM="${COURSE_CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

say() { printf 'setup_browser: %s\n' "$*"; }

# 1. Chromium from Debian.
if [ -x "$CHROMIUM" ]; then
    say "chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        say "error: $CHROMIUM is missing and apt-get is not available; install Chromium by hand" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
            say "error: $CHROMIUM is missing and installing it needs root (apt-get install chromium)" >&2
            exit 1
        fi
    fi
    say "chromium missing: apt-get update && apt-get install chromium"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
    say "installed: $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
fi

# 2. playwright-core from npm, exactly as pinned by the lock file.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "error: node and npm are needed (node >= 20)" >&2
    exit 1
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
    say "error: node $(node --version) is too old; playwright-core needs node >= 20" >&2
    exit 1
fi
WANT="$(node -p "require('$BROWSER_DIR/package-lock.json').packages['node_modules/playwright-core'].version")"
HAVE="$(node -p "try { require('$BROWSER_DIR/node_modules/playwright-core/package.json').version } catch (e) { '' }")"
if [ "$HAVE" = "$WANT" ]; then
    say "playwright-core $HAVE present in tests/browser/node_modules"
else
    say "installing playwright-core $WANT into tests/browser/node_modules (npm ci, no browser download)"
    (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    say "installed playwright-core $(node -p "require('$BROWSER_DIR/node_modules/playwright-core/package.json').version")"
fi
say "ready: run  .venv/bin/python -m pytest tests/browser -m browser"
