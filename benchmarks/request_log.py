"""Request log benchmark: what logging every request costs a batch-1 predict.

Exports the small digits CNN of benchmarks/serving.py and starts two `kerasflow serve`
processes side by side: one without a request log and one with `--request_log_uri` at 100%
sampling. One client then measures gRPC Predict and REST :predict latency at batch 1 against
both, in alternating rounds so that a change of load on the machine hits both alike. It prints
p50/p99 of each, the logged/unlogged p99 ratios (goal: at most 1.10), how many records the
log holds after the logging server stopped (every request should be there), and, measured
in-process, the microseconds per record the request path and the writer thread spend.

    python benchmarks/request_log.py [--requests 2000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import serving as bench  # noqa: E402 (benchmarks/serving.py, beside this file)


def grpc_timer(target: str, image: np.ndarray):
    """A function that sends one Predict and returns its latency in seconds."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    request = bench.grpc_request(image)

    def call() -> float:
        t0 = time.perf_counter()
        stub.Predict(request)
        return time.perf_counter() - t0

    return call


def rest_timer(port: int, body: bytes):
    """A function that sends one :predict over a keep-alive connection; returns seconds."""
    client = bench.RestClient(port, body)

    def call() -> float:
        t0 = time.perf_counter()
        client.call()
        return time.perf_counter() - t0

    return call


def measure_logger(folder: Path, image: np.ndarray, count: int) -> tuple[float, float]:
    """Microseconds per record the request path spends (offer, wall time) and the writer thread
    spends (encode and write, CPU time: its waits let requests go first and cost them nothing)."""
    from kerasflow.serving.request_logger import RequestLogger, RequestLogOptions

    logger = RequestLogger(RequestLogOptions(str(folder), queue_records=count + 1))
    outputs = {"output_0": np.full((1, 10), 0.1, np.float32)}
    t0 = time.perf_counter()
    for _ in range(count):
        logger.offer(
            model=bench.MODEL,
            version=1,
            signature="serving_default",
            method="predict",
            inputs={"image": image},
            outputs=outputs,
        )
    offered = time.perf_counter() - t0
    t0 = time.process_time()
    logger.start()
    logger.close()  # writes the whole queue, then finishes the file
    written = time.process_time() - t0
    return offered / count * 1e6, written / count * 1e6


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per API and server")
    parser.add_argument("--rounds", type=int, default=10, help="alternations between servers")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per client")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kerasflow.serving import request_log

    image = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    with tempfile.TemporaryDirectory(prefix="kerasflow-bench-") as tmp:
        bench.build_export(Path(tmp))
        logs = Path(tmp, "request-logs")
        ports = {"off": bench.free_port(), "on": bench.free_port()}
        servers = {
            "off": bench.start_server(Path(tmp), ports["off"], []),
            "on": bench.start_server(
                Path(tmp), ports["on"], [f"--request_log_uri={logs}", "--request_log_sampling=1"]
            ),
        }
        try:
            timers = {}
            for mode, (_, target) in servers.items():
                timers["gRPC", mode] = grpc_timer(target, image)
                timers["REST", mode] = rest_timer(ports[mode], body)
            for timer in timers.values():
                for _ in range(args.warmup):
                    timer()
            times: dict[tuple[str, str], list[float]] = {key: [] for key in timers}
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for key, timer in timers.items():
                    times[key].extend(timer() for _ in range(per_round))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=120)
        logged = sum(1 for _ in request_log.iter_records(str(logs), bench.MODEL))
        sent = 2 * (args.warmup + per_round * args.rounds)
        offer_us, write_us = measure_logger(Path(tmp, "micro"), image, 20000)

    print(f"cpus: {os.cpu_count()}; {per_round * args.rounds} measured requests per API/server")
    print()
    print("batch 1, one client     log off p50   p99     log on p50   p99      p99 ratio")
    ratios = {}
    for api in ("gRPC", "REST"):
        off = bench.percentiles(times[api, "off"])
        on = bench.percentiles(times[api, "on"])
        ratios[api] = on[1] / off[1]
        print(
            f"  {api:5s} ms           {off[0]:8.3f} {off[1]:8.3f}    {on[0]:8.3f} {on[1]:8.3f}"
            f"     {ratios[api]:.3f}  (p50 ratio {on[0] / off[0]:.3f})"
        )
    print()
    for api, ratio in ratios.items():
        verdict = "met" if ratio <= 1.10 else "missed"
        print(f"{api} p99 with 100% logging / without: {ratio:.3f} (goal <= 1.10: {verdict})")
    print(f"records in the log after shutdown: {logged} of {sent} requests sent to it")
    print(
        f"per record, in-process: {offer_us:.1f} us on the request path (sample + queue), "
        f"{write_us:.1f} us of CPU in the writer thread (encode + write)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
