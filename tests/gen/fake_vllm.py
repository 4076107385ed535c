"""A stand-in for vLLM's OpenAI-compatible server with the RL routes, for fast tests of the
clients, the pool, the guard and the weight sync (the real server is tested in
tests/post/test_rl_servers.py).

    python tests/gen/fake_vllm.py --port P [--host H] --id K [--raw-logprobs] [--rpc-delay S]
        [--fork-child] [--fail /route]

Completion k of a request is `[K, k, prompt[0]]` with log-prob -1/temperature per token
(-1 with --raw-logprobs, as vLLM's default mode gives), so a test can tell which server
answered. `--fork-child` leaves a sleeping grandchild, as vLLM's engine process is.
"""

import argparse
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"version": "default", "reloads": [], "paused": False}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        route = urlparse(self.path).path
        if route == "/health":
            return self.answer({})
        if route == "/weight_info":
            return self.answer({"weight_version": STATE["version"]})
        if route == "/state":
            return self.answer(STATE)
        self.answer({"error": "no route"}, 404)

    def do_POST(self):
        url = urlparse(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if url.path == ARGS.fail:
            return self.answer({"error": f"{url.path} failed on purpose"}, 500)
        if url.path == "/v1/completions":
            return self.answer(complete(body))
        if url.path == "/collective_rpc":
            time.sleep(ARGS.rpc_delay)
            STATE["reloads"].append(body["kwargs"]["weights_path"])
            return self.answer({"results": [None]})
        if url.path == "/update_weight_version":
            STATE["version"] = body["new_version"]
        elif url.path in ("/pause", "/resume"):
            STATE["paused"] = url.path == "/pause" and parse_qs(url.query).get("mode") == ["wait"]
        elif url.path != "/abort_requests":
            return self.answer({"error": "no route"}, 404)
        self.answer({"status": "ok"})


def complete(body: dict) -> dict:
    temperature = body.get("temperature") or 1.0
    logprob = -1.0 if ARGS.raw_logprobs else -1.0 / temperature
    if body.get("logprob_token_ids"):
        top = [{"token_id:0": logprob}]
        return {"choices": [{"index": 0, "logprobs": {"top_logprobs": top}}]}
    ids = [[ARGS.id, k, body["prompt"][0]] for k in range(body["n"])]
    choices = [
        {"index": k, "token_ids": t, "finish_reason": "length",
         "logprobs": {"token_logprobs": [logprob] * len(t)}}
        for k, t in enumerate(ids)
    ]  # fmt: skip
    return {"choices": choices}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--id", type=int, default=0)
    parser.add_argument("--raw-logprobs", action="store_true")
    parser.add_argument("--rpc-delay", type=float, default=0.0)
    parser.add_argument("--fork-child", action="store_true")
    parser.add_argument("--fail", default="")
    ARGS = parser.parse_args()
    if ARGS.fork_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"fake_vllm: child pid {child.pid}", file=sys.stderr, flush=True)
    ThreadingHTTPServer((ARGS.host, ARGS.port), Handler).serve_forever()
