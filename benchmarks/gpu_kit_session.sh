#!/usr/bin/env bash
# One device call that measures every #9 figure on a lent GPU (about 8 minutes on an H200):
#   bash ../shared/gpu/make_kit.sh   # on the CPU machine, after .ci/run made .venv; writes .kit/
#   device run, carry [".kit"], timeout_s 560:  bash benchmarks/gpu_kit_session.sh
# The kit at the base shape (upstream vs src/, which also builds /tmp/models/base), then this
# package's large shape (cold, throughput), the server under 32 clients and where a cold query's
# time goes (compiled, profiled). Each step has its own timeout (env: BENCH_S, LARGE_S, SERVER2_S, BD_S).
export OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SHAPES=base BENCH_S=${BENCH_S:-195} SERVER_S=1 bash .kit/gpu/run.sh > "$OUT/run.log" 2>&1
grep -v -i "warn" "$OUT/run.log" | grep -v '"per_query_s"' | tail -12
grep -o '"impl": "[a-z]*", "mode": "[a-z]*", "load_s": [0-9.]*\|"median_query_s": [0-9.]*\|"work": "[a-z]*"\|"mfu": [0-9.]*\|"peak_cuda_gb": [0-9.]*\|"s_per_query": [0-9.]*' "$OUT/run.log" | paste -sd' ' | sed 's/"impl"/\n"impl"/g'
export PYTHONPATH=$PWD/src PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
timeout ${LARGE_S:-115} python3 benchmarks/bench_gpu.py --shape large --tokenizer .kit/tok --backends "" \
  --workloads cold,throughput --output "$OUT/large.json" > "$OUT/large.log" 2>&1
grep -v -i "warn" "$OUT/large.log" | cut -c1-400 | tail -8
PYTHONPATH=$PWD/src:/tmp/srv timeout ${SERVER2_S:-70} python3 benchmarks/bench_server.py --model /tmp/models/base \
  --family mxbai-v2 --device cuda --clients 32 --requests 400 --docs-per-request 20 --time-limit 30 \
  --output "$OUT/server.json" > "$OUT/server.log" 2>&1
grep -v -i "warn" "$OUT/server.log" | tail -7
timeout ${BD_S:-65} python3 benchmarks/bench_gpu_breakdown.py --model /tmp/models/base --compile --profile --queries 5 \
  --chunk-tokens 65536 --output "$OUT/breakdown_compile.json" > "$OUT/bd_compile.log" 2>&1
grep -v -i "warn" "$OUT/bd_compile.log" | head -48 | tail -44
