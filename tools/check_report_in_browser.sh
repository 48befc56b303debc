#!/usr/bin/env bash
# Render a `detforge report` page in headless Chromium and save a screenshot, to look at
# what a browser shows (not run in CI: it needs Chromium, `apt-get install chromium` on
# Debian).
#
#   tools/check_report_in_browser.sh WORK_DIR/report.html shot.png [WIDTH,HEIGHT]
#
# The page must render with the network off: Chromium runs with no proxy resolution and
# any http(s) request failing, so a missing picture or style shows in the screenshot.
set -euo pipefail
page=${1:?usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]}
out=${2:?usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]}
size=${3:-1200,3000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "no Chromium found (Debian: apt-get install chromium)" >&2
    exit 1
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --proxy-server='http://127.0.0.1:9' --host-resolver-rules='MAP * ~NOTFOUND' \
    --window-size="$size" --screenshot="$(realpath -m "$out")" \
    "file://$(realpath "$page")" 2>/dev/null
test -s "$out" && echo "wrote $out"
