#!/usr/bin/env bash
# The amd64 package, installed for real with dpkg on this machine (as root;
# CI runs as root): its files, its user, nothing started, the unit verified
# and sandboxed (exposure <= 2.0), `storegate check` on the installed
# config (refused as shipped, accepted once edited), events journaled by
# the installed binary, an upgrade to a higher version over that database
# (same events, config untouched), remove (data kept) and purge (gone).
#
#   sudo scripts/package-test.sh     # builds both packages (scripts/build-deb.sh)
#
# Purges the package when it ends, failed or not. Refuses to run where
# storegate is already installed. docs/packaging.md
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "package-test: run as root (dpkg -i)" >&2; exit 1; }
command -v mosquitto_pub >/dev/null 2>&1 || {
    echo "package-test: mosquitto_pub is missing: apt-get install mosquitto-clients" >&2
    exit 1
}
if dpkg-query -W -f='${Status}' storegate 2>/dev/null | grep -qv "not-installed"; then
    echo "package-test: storegate is already installed here; this test would purge it. Stopping." >&2
    exit 1
fi

CONFIG=/etc/storegate/storegate.toml
work=$(mktemp -d)
agent=""
step="start"

cleanup() {
    status=$?
    if [ -n "$agent" ] && kill -0 "$agent" 2>/dev/null; then
        kill "$agent" 2>/dev/null || true
        wait "$agent" 2>/dev/null || true
    fi
    if dpkg-query -W -f='${Status}' storegate 2>/dev/null | grep -qv "not-installed"; then
        dpkg -P storegate >/dev/null 2>&1 || echo "package-test: could not purge storegate" >&2
    fi
    if [ "$status" -ne 0 ]; then
        echo "package-test: FAILED at step: $step (exit $status)" >&2
        [ -f "$work/agent.log" ] && { echo "---- agent log (last 40 lines)" >&2; tail -40 "$work/agent.log" >&2; }
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "package-test: $step: $*" >&2
    exit 1
}

# ---- build: two packages of the same binary, the second a higher version
step="build"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
v1="$version-1"
v2="$version-2"
# cargo-deb empties target/debian/ of older packages: keep each one here.
deb1="$work/storegate_${v1}_amd64.deb"
deb2="$work/storegate_${v2}_amd64.deb"
scripts/build-deb.sh "" --deb-version "$v1"
cp "target/debian/storegate_${v1}_amd64.deb" "$deb1"
scripts/build-deb.sh "" --deb-version "$v2"
cp "target/debian/storegate_${v2}_amd64.deb" "$deb2"
ls -l "$deb1" "$deb2"

# ---- install: the user and directories are made, nothing starts
step="install"
dpkg -i "$deb1" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i exited $?"; }
cat "$work/install.log"
grep -q "does not pass 'storegate check' yet" "$work/install.log" ||
    fail "postinst did not say the shipped config must be edited first"

step="installed files"
for f in /usr/bin/storegate \
    /usr/lib/systemd/system/storegate.service \
    /usr/lib/sysusers.d/storegate.conf \
    /usr/lib/tmpfiles.d/storegate.conf \
    /usr/share/storegate/firmware-profiles/pos-json.toml \
    /usr/share/storegate/firmware-profiles/uhf-m100-serial.toml \
    /usr/share/storegate/examples/simulators.conf \
    "$CONFIG" \
    /usr/share/man/man1/storegate.1.gz \
    /usr/share/man/man1/storegate-check.1.gz \
    /usr/share/bash-completion/completions/storegate \
    /usr/share/zsh/vendor-completions/_storegate \
    /usr/share/fish/vendor_completions.d/storegate.fish \
    /usr/share/doc/storegate/config.md; do
    [ -e "$f" ] || fail "$f is not installed"
done
profiles=$(ls /usr/share/storegate/firmware-profiles/*.toml | wc -l)
[ "$profiles" -eq "$(ls firmware-profiles/*.toml | wc -l)" ] || fail "$profiles firmware profiles installed"
dpkg-query -W -f='${Conffiles}\n' storegate | grep -q " $CONFIG " || fail "$CONFIG is not a conffile"
size=$(stat -c %s /usr/bin/storegate)
[ "$size" -lt 20000000 ] || fail "/usr/bin/storegate is $size bytes (the issue allows under 20 MB)"
if command -v readelf >/dev/null 2>&1; then
    ! readelf -S /usr/bin/storegate | grep -q '\.symtab' || fail "/usr/bin/storegate is not stripped"
    ! readelf -S /usr/bin/storegate | grep -q '\.debug_' || fail "/usr/bin/storegate carries debug info"
fi
# The store build: no simulators, demo or benches.
if /usr/bin/storegate demo --help >/dev/null 2>&1; then fail "the packaged binary has the demo (devtools)"; fi
zcat /usr/share/man/man1/storegate.1.gz | grep -q '^\.TH storegate 1' || fail "storegate.1 is not a man page"
bash -c 'source /usr/share/bash-completion/completions/storegate && complete -p storegate' >/dev/null ||
    fail "the bash completion does not register for storegate"
echo "files       binary $size bytes (stripped), unit, sysusers, tmpfiles, $profiles profiles, conffile, man, completions"

step="user and directories"
getent passwd storegate >/dev/null || fail "no storegate user"
id -nG storegate | grep -qw dialout || fail "storegate is not in dialout: $(id storegate)"
[ "$(stat -c '%U:%G %a' /var/lib/storegate)" = "storegate:storegate 750" ] ||
    fail "/var/lib/storegate is $(stat -c '%U:%G %a' /var/lib/storegate)"
[ "$(stat -c '%U:%G %a' /etc/storegate)" = "root:storegate 750" ] ||
    fail "/etc/storegate is $(stat -c '%U:%G %a' /etc/storegate)"
[ -L /etc/systemd/system/multi-user.target.wants/storegate.service ] || fail "the unit is not enabled"
# Nothing runs: no process of the storegate user, no database yet.
if pgrep -u storegate >/dev/null; then fail "something runs as storegate: $(pgrep -a -u storegate)"; fi
[ ! -e /var/lib/storegate/storegate.db ] || fail "a database exists although nothing should have started"
echo "user        $(id storegate); unit enabled, nothing started"

# ---- the installed unit
step="systemd-analyze verify"
out=$(systemd-analyze verify /usr/lib/systemd/system/storegate.service 2>&1) || fail "exited $?: $out"
if grep -q storegate.service <<<"$out"; then fail "$out"; fi
step="systemd-analyze security"
out=$(systemd-analyze security --no-pager --offline=yes /usr/lib/systemd/system/storegate.service 2>&1) || true
exposure=$(sed -n 's/.*Overall exposure level for storegate.service: \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$exposure" ] || fail "no exposure level in: $out"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure > 2.0:"$'\n'"$out"
grep -q '^RestartPreventExitStatus=78$' /usr/lib/systemd/system/storegate.service ||
    fail "the unit does not keep a config error (exit 78) from restarting"
echo "unit        verify OK, exposure $exposure"

# ---- check: the shipped config is refused with the reason, an edited one passes
step="check as shipped"
if out=$(runuser -u storegate -- storegate check --config "$CONFIG" 2>&1); then
    fail "the shipped config passed check: $out"
else
    code=$?
fi
grep -q "store_id: missing" <<<"$out" || fail "exit $code without naming store_id: $out"
echo "check       as shipped: refused (exit $code): $(grep 'store_id' <<<"$out" | head -1 | sed 's/^ *//')"

step="check edited"
api_port=$((20000 + RANDOM % 20000))
mqtt_port=$((api_port + 1))
sed -i 's/^# store_id = .*/store_id = "pkg-test"/' "$CONFIG"
sed -i "s/^# listen = .*/listen = \"127.0.0.1:$api_port\"/; s/^# embedded_listen = .*/embedded_listen = \"127.0.0.1:$mqtt_port\"/" "$CONFIG"
cat >>"$CONFIG" <<CONF

[[device]]
id = "pos-1"
profile = "pos-json"
transport = "mqtt"
topic = "pkg-test/pos/1"
CONF
out=$(runuser -u storegate -- storegate check --config "$CONFIG" 2>&1) || fail "the edited config is refused: $out"
grep -q "pos-1" <<<"$out" || fail "check does not list pos-1: $out"
config_sum=$(sha256sum "$CONFIG")
echo "check       edited: OK"

# ---- events: the installed agent, as the storegate user, journals receipts
step="journal events"
receipts=25
# setpriv execs the agent itself (runuser would stay as its parent), so
# $! is the agent and SIGTERM reaches it directly.
setpriv --reuid=storegate --regid=storegate --init-groups -- /usr/bin/storegate run --config "$CONFIG" >"$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 1 120); do
    grep -q "MQTT device subscribed" "$work/agent.log" && break
    kill -0 "$agent" 2>/dev/null || fail "the agent exited"
    sleep 0.5
done
grep -q "MQTT device subscribed" "$work/agent.log" || fail "the agent did not subscribe within 60 s"
for i in $(seq 1 "$receipts"); do
    mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -q 1 -t pkg-test/pos/1 \
        -m "{\"receipt_id\":\"R-$i\",\"pos\":\"1\",\"currency\":\"EUR\",\"lines\":[{\"sku\":\"SKU-1001\",\"qty\":1,\"unit_price_minor\":249}]}"
done
count=0
for _ in $(seq 1 120); do
    count=$(runuser -u storegate -- storegate export --config "$CONFIG" | grep -c '"kind":"sale"' || true)
    [ "$count" -ge "$receipts" ] && break
    sleep 0.5
done
[ "$count" -eq "$receipts" ] || fail "$count sales journaled of $receipts receipts sent"
kill -TERM "$agent"
wait "$agent" || fail "the agent exited $? on SIGTERM"
agent=""
runuser -u storegate -- storegate export --config "$CONFIG" >"$work/before.ndjson"
echo "journal     $receipts receipts sent, $(wc -l <"$work/before.ndjson") events journaled in /var/lib/storegate"

# ---- upgrade over the database
step="upgrade"
dpkg -i "$deb2" >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log" >&2; fail "dpkg -i exited $?"; }
[ "$(dpkg-query -W -f='${Version}' storegate)" = "$v2" ] || fail "installed version is $(dpkg-query -W -f='${Version}' storegate)"
[ "$(sha256sum "$CONFIG")" = "$config_sum" ] || fail "the upgrade changed $CONFIG"
[ "$(stat -c '%U:%G %a' /etc/storegate)" = "root:storegate 750" ] ||
    fail "after the upgrade /etc/storegate is $(stat -c '%U:%G %a' /etc/storegate)"
runuser -u storegate -- storegate export --config "$CONFIG" >"$work/after.ndjson"
cmp -s "$work/before.ndjson" "$work/after.ndjson" ||
    fail "the journal differs after the upgrade: $(diff "$work/before.ndjson" "$work/after.ndjson" | head -5)"
echo "upgrade     $v1 -> $v2: config untouched, all $(wc -l <"$work/after.ndjson") events still there"

# ---- remove keeps data and config, purge removes them
step="remove"
dpkg -r storegate >/dev/null
[ ! -e /usr/bin/storegate ] || fail "/usr/bin/storegate is still there"
[ -f /var/lib/storegate/storegate.db ] || fail "remove deleted the database"
[ -f "$CONFIG" ] || fail "remove deleted $CONFIG"
echo "remove      binary gone; database and config kept"

step="purge"
dpkg -P storegate >/dev/null
[ ! -e /var/lib/storegate ] || fail "/var/lib/storegate is still there"
[ ! -e /etc/storegate ] || fail "/etc/storegate is still there"
echo "purge       /var/lib/storegate and /etc/storegate gone"
echo "package-test: OK"
