#!/usr/bin/env bash
# Debian packages the tests use: espeak-ng speaks the sentences that the speech tests transcribe;
# a CJK font draws the Chinese text that the OCR tests read; Chromium runs the web page's tests
# (driven by Playwright with this browser: Playwright's own download is not needed). (FFmpeg
# comes from the imageio-ffmpeg wheel when the system has none.)
set -euo pipefail
PACKAGES=(espeak-ng fonts-wqy-zenhei chromium)
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ "${1:-}" != "speech" ]; then  # the demo needs speech only
  [ -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || missing+=(fonts-wqy-zenhei)
  command -v chromium >/dev/null || missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "msearch tests need: ${PACKAGES[*]} (install them with your package manager)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing ${missing[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
