"""llama-cpp-python alone in a process of its own: the ceiling that bench/chat_bench.py compares against.

It runs in its own process because the benchmark process also holds gRPC and HTTP clients whose threads
would compete with llama.cpp's for the two cores. It reads one JSON batch order per line on stdin
({"concurrency", "requests", "max_tokens"}), runs it, and answers one JSON line of results on stdout.

    python -m bench.in_process_worker MODEL_PATH THREADS CONTEXT
"""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import llama_cpp

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def main() -> None:
    model_path, threads, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = llama_cpp.Llama(model_path, n_ctx=context, n_threads=threads, verbose=False)
    # One Llama serves one request at a time, as behind any server; the others wait for it.
    lock = threading.Lock()

    def generate(max_tokens: int) -> dict[str, float]:
        started = time.perf_counter()
        with lock:
            first = 0.0
            tokens = 0
            for chunk in llm.create_chat_completion(
                PROMPT, max_tokens=max_tokens, temperature=0, stream=True
            ):
                if chunk["choices"][0]["delta"].get("content"):
                    tokens += 1
                    first = first or time.perf_counter() - started
        return {"ttft_s": first, "duration_s": time.perf_counter() - started, "tokens": tokens}

    print("ready", flush=True)
    for line in sys.stdin:
        order = json.loads(line)
        started = time.perf_counter()
        with ThreadPoolExecutor(order["concurrency"]) as pool:
            results = list(pool.map(generate, [order["max_tokens"]] * order["requests"]))
        print(json.dumps({"wall_s": time.perf_counter() - started, "results": results}), flush=True)


if __name__ == "__main__":
    main()
