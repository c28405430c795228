#!/usr/bin/env bash
# The main job on embedded defaults: install, start search, index a sample folder, query it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/msearch ] || bash scripts/setup.sh
export MSEARCH_DATA_DIR=${MSEARCH_DATA_DIR:-$PWD/.msearch-demo}
export MSEARCH_PORT=${MSEARCH_PORT:-8000}
url="http://127.0.0.1:$MSEARCH_PORT"
bin=.venv/bin

bash scripts/system-deps.sh speech || echo "(espeak-ng could not be installed: the sample has no speech)"
"$bin/python" scripts/make_sample.py sample

echo "== starting msearch serve (Ray, store owner, Serve app on $url)"
"$bin/msearch" serve > .msearch-serve.log 2>&1 &
server=$!
stop() { kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM
for _ in $(seq 180); do
  # Ready: the app answers and the server has printed where it serves.
  curl -sf "$url/health" > /dev/null && grep -q "Press Ctrl-C" .msearch-serve.log && break
  kill -0 $server 2>/dev/null || { cat .msearch-serve.log; exit 1; }
  sleep 1
done
curl -sf "$url/health" > /dev/null || { echo "msearch serve did not come up"; cat .msearch-serve.log; exit 1; }
grep -E "^(msearch is serving|Ray dashboard)" .msearch-serve.log || true

echo "== msearch index sample   (runs on the Ray cluster of the server above)"
"$bin/msearch" index sample

echo "== msearch search \"how much money will we spend next year\""
"$bin/msearch" search "how much money will we spend next year" --top-k 3
echo "== msearch search \"the interviewee says budget\"   (speech, with the moment it is said)"
"$bin/msearch" search "the interviewee says budget" --kind audio --kind video --top-k 3
echo "== msearch search \"olive oil delivery\" --kind page   (a scanned PDF, read by OCR)"
"$bin/msearch" search "olive oil delivery" --kind page --top-k 2
echo "== msearch search \"红色汽车在雨中\""
"$bin/msearch" search "红色汽车在雨中" --top-k 3
echo "== msearch search \"望远镜看到了木星的卫星\"   (Chinese words, an English note)"
"$bin/msearch" search "望远镜看到了木星的卫星" --kind text --top-k 2
echo "== msearch search \"the budget meeting was moved\"   (English words, a Chinese note)"
"$bin/msearch" search "the budget meeting was moved" --kind text --top-k 2
echo "== msearch search --like sample/notes/garden.txt --path sample/notes   (like a file, in one folder)"
"$bin/msearch" search --like sample/notes/garden.txt --path sample/notes --top-k 2
echo "== POST $url/api/v1/search"
curl -s -X POST "$url/api/v1/search" -H 'content-type: application/json' \
  -d '{"query": "the interviewee says budget", "kinds": ["text"], "top_k": 2}' | "$bin/python" -m json.tool
echo "== msearch status"
"$bin/msearch" status
echo "== the search page is at $url/ while msearch serve runs (this demo stops it now;"
echo "   run .venv/bin/msearch serve with MSEARCH_DATA_DIR=$MSEARCH_DATA_DIR to keep it)"
