#!/usr/bin/env bash
# Start PostgreSQL and NATS (JetStream) when they are installed but not running.
# With CI=true a service that cannot be reached is an error (the integration
# tests would otherwise be skipped); elsewhere it is a warning.
set -u
pg_host=${ALPHASWARM_TEST_PG_HOST:-127.0.0.1}
nats_port=${ALPHASWARM_TEST_NATS_PORT:-4222}
status=0

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# A fresh machine may lack the servers: install them from Debian's packages when we can.
apt_install() {
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $* (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >/dev/null 2>&1 || true
  fi
}
if ! port_open "$pg_host" 5432 && ! [ -d /etc/postgresql ]; then
  apt_install postgresql
  # trust auth on loopback, as the tests expect of a throwaway server
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    [ -f "$hba" ] && sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
  done
fi
if ! port_open 127.0.0.1 "$nats_port" && ! command -v nats-server >/dev/null 2>&1 && ! [ -x /usr/sbin/nats-server ]; then
  apt_install nats-server
fi
# The browser tests (tests/browser/) drive Debian's Chromium through Playwright.
if ! [ -x "${ALPHASWARM_CHROMIUM:-/usr/bin/chromium}" ]; then
  apt_install chromium
fi
# tests/integration/test_compose_security.py validates deploy/docker-compose.yml with it.
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi

if ! port_open "$pg_host" 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
    for _ in $(seq 1 30); do port_open "$pg_host" 5432 && break; sleep 0.5; done
  fi
fi
if port_open "$pg_host" 5432; then echo "PostgreSQL: up on $pg_host:5432"; else echo "PostgreSQL: NOT reachable on $pg_host:5432"; status=1; fi

if ! port_open 127.0.0.1 "$nats_port"; then
  if [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1; then
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    mkdir -p /var/lib/nats-server 2>/dev/null || true
    if command -v start-stop-daemon >/dev/null 2>&1; then
      start-stop-daemon --start --oknodo --background --exec "$bin" -- -a 127.0.0.1 -p "$nats_port" -js \
        -sd /var/lib/nats-server -l /var/log/nats-server.log || true
    else
      nohup "$bin" -a 127.0.0.1 -p "$nats_port" -js -sd "${TMPDIR:-/tmp}/nats-js" >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 30); do port_open 127.0.0.1 "$nats_port" && break; sleep 0.5; done
  fi
fi
if port_open 127.0.0.1 "$nats_port"; then echo "NATS: up on 127.0.0.1:$nats_port"; else echo "NATS: NOT reachable on 127.0.0.1:$nats_port"; status=1; fi

chromium_bin=${ALPHASWARM_CHROMIUM:-/usr/bin/chromium}
if [ -x "$chromium_bin" ]; then echo "Chromium: $chromium_bin"; else echo "Chromium: NOT installed at $chromium_bin (apt-get install chromium)"; status=1; fi

if [ "$status" -ne 0 ] && [ "${CI:-}" = "true" ]; then
  echo "CI=true and a required service is missing" >&2
  exit 1
fi
exit 0
