#!/usr/bin/env bash
# Refresh the Strategy Browser's vendored chart libraries from the npm registry.
# Usage: scripts/ui_vendor.sh [lightweight-charts-version] [echarts-version]
set -euo pipefail
LWC_VERSION="${1:-${LWC_VERSION:-5.3.0}}"
ECHARTS_VERSION="${2:-${ECHARTS_VERSION:-6.1.0}}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/services/gateway/alphaswarm_gateway/browser/static/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
npm pack --silent "lightweight-charts@${LWC_VERSION}" "echarts@${ECHARTS_VERSION}" >/dev/null
mkdir lwc ech
tar xzf "lightweight-charts-${LWC_VERSION}.tgz" -C lwc
tar xzf "echarts-${ECHARTS_VERSION}.tgz" -C ech
mkdir -p "$DEST/lightweight-charts" "$DEST/echarts"
cp lwc/package/dist/lightweight-charts.standalone.production.mjs "$DEST/lightweight-charts/lightweight-charts.js"
cp lwc/package/LICENSE "$DEST/lightweight-charts/LICENSE"
cp ech/package/dist/echarts.esm.min.mjs "$DEST/echarts/echarts.js"
cp ech/package/LICENSE ech/package/NOTICE "$DEST/echarts/"
cat > "$DEST/VERSIONS" <<VERSIONS
# Chart libraries vendored from the npm registry (\`make ui-vendor\` refreshes them).
lightweight-charts@${LWC_VERSION} dist/lightweight-charts.standalone.production.mjs -> lightweight-charts/lightweight-charts.js (Apache-2.0)
echarts@${ECHARTS_VERSION} dist/echarts.esm.min.mjs -> echarts/echarts.js (Apache-2.0)
VERSIONS
echo "vendored lightweight-charts@${LWC_VERSION} and echarts@${ECHARTS_VERSION} into ${DEST}"
