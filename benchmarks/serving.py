"""Serving benchmark: the model server against raw in-process calls of the same SavedModel.

Builds a small CNN for 8x8 digit images, exports it, and measures in one run:

- raw: the SavedModel's serving signature called in-process at batch 1 (the reference);
- latency with one client, over gRPC (tensorflow-serving-api stubs) and REST (HTTP/1.1
  keep-alive), against `python -m kerasflow.serving serve` in its own process, started as by
  default: no batching, metrics on;
- throughput with 1, 8 and 32 concurrent clients for both APIs, every request one image,
  against a second server started with `--enable_batching` and a batching parameters file.

It prints the figures and two ratios: gRPC p50 minus raw p50 (goal: at most 0.6 ms) and gRPC
throughput at 32 clients over the raw batch-1 call rate (goal: at least 2, thanks to batching).
The clients run in this process (gRPC on asyncio, REST on threads); the machine is shared, so
numbers move between runs.

    python benchmarks/serving.py [--seconds 3] [--requests 1000] [--batch-timeout-micros N]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench"
CLIENT_COUNTS = (1, 8, 32)
# Goals: gRPC p50 at most this much above the raw p50, and gRPC throughput at 32 clients at
# least this many times the raw batch-1 call rate.
LATENCY_GOAL_MS = 0.6
THROUGHPUT_GOAL = 2.0
# The batch timeout of the throughput server.
DEFAULT_TIMEOUT_MICROS = 0
# Latency is measured in this many turns of raw, gRPC and REST calls.
ROUNDS = 5


def build_export(folder: Path) -> Path:
    """Exports a small digits CNN (about 10k parameters) as version 1 of MODEL."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(image, out)
    version = folder / MODEL / "1"
    model.export(str(version), verbose=False)
    print(f"model: small CNN, {model.count_params()} parameters, exported to {version}")
    return version


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = np.array(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def raw_caller(version: Path, image: np.ndarray):
    """A function calling the signature at batch 1 in this process, warmed up."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version)).signatures["serving_default"]

    def call():
        return signature(image=tf.constant(image))["output_0"].numpy()

    for _ in range(100):
        call()
    return call


def timed(call, count: int) -> list[float]:
    """Seconds each of `count` calls took."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def call_rate(call, seconds: float) -> float:
    """Calls per second of `call` in a loop for about `seconds`."""
    done = 0
    start = time.perf_counter()
    stop = start + seconds
    while time.perf_counter() < stop:
        call()
        done += 1
    return done / (time.perf_counter() - start)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(base: Path, rest_port: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """Starts `python -m kerasflow.serving serve`; returns the process and its gRPC target."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kerasflow.serving",
            "serve",
            "--port=0",
            f"--rest_api_port={rest_port}",
            f"--model_name={MODEL}",
            f"--model_base_path={base / MODEL}",
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                raise RuntimeError("the server exited before it was ready") from None
            continue
        if "ready" in line:
            target = line.split("gRPC on ")[1].split(",")[0]
            return proc, target
    proc.kill()
    raise RuntimeError("the server did not get ready in time")


def grpc_request(image: np.ndarray):
    """A PredictRequest for MODEL carrying `image`."""
    from tensorflow_serving.apis import predict_pb2

    from kerasflow.serving.tensors import from_ndarray

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    from_ndarray(image, out=request.inputs["image"])
    return request


def grpc_caller(target: str, image: np.ndarray):
    """A function making one Predict call from a synchronous client, warmed up."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = grpc_request(image)

    def call():
        return stub.Predict(request)

    for _ in range(100):
        call()
    return call


def measure_grpc_throughput(target: str, image: np.ndarray, clients: int, seconds: float) -> float:
    """Requests per second with `clients` calls always in flight (asyncio client)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_request(image)

    async def run() -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(20):
                await stub.Predict(request)
            done = 0
            stop = time.perf_counter() + seconds

            async def client() -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    await stub.Predict(request)
                    done += 1

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return done / (time.perf_counter() - start)

    return asyncio.run(run())


class RestClient:
    """One keep-alive HTTP/1.1 connection posting the same predict body."""

    def __init__(self, port: int, body: bytes):
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.body = body
        self.headers = {"Content-Type": "application/json"}
        self.path = f"/v1/models/{MODEL}:predict"

    def call(self) -> None:
        """Sends one predict request and reads the whole answer."""
        self.conn.request("POST", self.path, self.body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST answered {response.status}: {data[:200]!r}")


def rest_caller(port: int, body: bytes):
    """A function making one :predict request on a keep-alive connection, warmed up."""
    client = RestClient(port, body)
    for _ in range(100):
        client.call()
    return client.call


def measure_rest_throughput(port: int, body: bytes, clients: int, seconds: float) -> float:
    """Requests per second with `clients` threads, each on its own connection."""
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        client = RestClient(port, body)
        client.call()
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            client.call()
            counts[index] += 1
        client.conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds + 0.05
    start = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput point")
    parser.add_argument("--requests", type=int, default=1000, help="per latency measurement")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-micros", type=int, default=DEFAULT_TIMEOUT_MICROS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    image = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    with tempfile.TemporaryDirectory(prefix="kerasflow-bench-") as tmp:
        version = build_export(Path(tmp))
        raw = raw_caller(version, image)
        # Latency: the server as `kerasflow serve` starts by default (no batching, metrics on).
        # The three are measured in turns, so that load from other processes hits them alike.
        rest_port = free_port()
        server, target = start_server(Path(tmp), rest_port, [])
        try:
            callers = {
                "raw": raw,
                "gRPC": grpc_caller(target, image),
                "REST": rest_caller(rest_port, body),
            }
            times: dict[str, list[float]] = {name: [] for name in callers}
            for _ in range(ROUNDS):
                for name, call in callers.items():
                    times[name] += timed(call, max(1, args.requests // ROUNDS))
            raw_p50, raw_p99 = percentiles(times["raw"])
            grpc_p50, grpc_p99 = percentiles(times["gRPC"])
            rest_p50, rest_p99 = percentiles(times["REST"])
        finally:
            server.terminate()
            server.wait(timeout=60)
        # Throughput: the server with batching, so concurrent requests share model calls.
        batching = Path(tmp, "batching.config")
        batching.write_text(
            f"max_batch_size {{ value: {args.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
        )
        rest_port = free_port()
        server, target = start_server(
            Path(tmp),
            rest_port,
            ["--enable_batching", f"--batching_parameters_file={batching}"],
        )
        try:
            throughput = {}
            raw_rates = []
            for clients in CLIENT_COUNTS:
                # The raw rate next to each point, for the same reason as above.
                raw_rates.append(call_rate(raw, args.seconds / 2))
                throughput["gRPC", clients] = measure_grpc_throughput(
                    target, image, clients, args.seconds
                )
                throughput["REST", clients] = measure_rest_throughput(
                    rest_port, body, clients, args.seconds
                )
        finally:
            server.terminate()
            server.wait(timeout=60)
    raw_rate = float(np.median(raw_rates))

    print(f"cpus: {os.cpu_count()}")
    print()
    print("latency, one client, batch 1, server without batching      p50 ms    p99 ms")
    for label, p50, p99 in (
        ("raw signature call (in-process)", raw_p50, raw_p99),
        ("gRPC Predict", grpc_p50, grpc_p99),
        ("REST :predict", rest_p50, rest_p99),
    ):
        print(f"  {label:56s} {p50:8.3f}  {p99:8.3f}")
    print()
    print(
        f"throughput, requests/s of 1 image, server with --enable_batching "
        f"(max_batch_size={args.max_batch_size}, batch_timeout_micros={args.batch_timeout_micros})"
    )
    print(
        f"  raw batch-1 call rate: {raw_rate:,.0f}/s (median of "
        f"{', '.join(f'{r:,.0f}' for r in raw_rates)})"
    )
    print("  clients        gRPC        REST")
    for clients in CLIENT_COUNTS:
        print(
            f"  {clients:7d}  {throughput['gRPC', clients]:10,.0f}  "
            f"{throughput['REST', clients]:10,.0f}"
        )
    print()
    overhead = grpc_p50 - raw_p50
    ratio = throughput["gRPC", 32] / raw_rate
    rest_ratio = throughput["REST", 32] / raw_rate
    print(
        f"gRPC p50 - raw p50: {overhead:.3f} ms (goal <= {LATENCY_GOAL_MS} ms: "
        f"{'met' if overhead <= LATENCY_GOAL_MS else 'missed'})"
    )
    print(f"REST p50 - raw p50: {rest_p50 - raw_p50:.3f} ms")
    print(
        f"gRPC throughput at 32 clients / raw batch-1 rate: {ratio:.2f} (goal >= "
        f"{THROUGHPUT_GOAL}: {'met' if ratio >= THROUGHPUT_GOAL else 'missed'})"
    )
    print(f"REST throughput at 32 clients / raw batch-1 rate: {rest_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
