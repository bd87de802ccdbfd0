"""What grpc's Python servers cost before any model runs: asyncio against threaded.

Two servers in processes of their own answer PredictionService.Predict with a fixed response
(no model, no decoding): one on `grpc.aio` (as `kerasflow serve` runs), one on grpc's threaded
server. One client measures batch-1 latency against both in alternating rounds; then 32 client
threads measure throughput against each in turn. It prints p50/p99 and calls per second for
each and the ratios threaded/asyncio, all from one invocation.

    python benchmarks/grpc_transport.py [--requests 1000] [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import threading
import time

import numpy as np


def _response():
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "bench"
    response.outputs["probabilities"].dtype = 1  # DT_FLOAT
    response.outputs["probabilities"].tensor_shape.dim.add().size = 1
    response.outputs["probabilities"].tensor_shape.dim.add().size = 10
    response.outputs["probabilities"].float_val.extend([0.1] * 10)
    return response


def _serve(kind: str, port: multiprocessing.Value) -> None:
    import asyncio

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    canned = _response()

    if kind == "threaded":

        class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):  # noqa: N802
                return canned

        server = grpc.server(concurrent.futures.ThreadPoolExecutor(64))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Service(), server)
        port.value = server.add_insecure_port("127.0.0.1:0")
        server.start()
        server.wait_for_termination()
        return

    class AsyncService(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):  # noqa: N802
            return canned

    async def main() -> None:
        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(AsyncService(), server)
        port.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _request():
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bench"
    image = request.inputs["image"]
    image.dtype = 1
    for size in (1, 8, 8, 1):
        image.tensor_shape.dim.add().size = size
    image.float_val.extend(np.random.default_rng(0).random(64).tolist())
    return request


def _stub(port: int):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def latencies(port: int, count: int) -> list[float]:
    stub, request = _stub(port), _request()
    stub.Predict(request, timeout=10)  # connect
    out = []
    for _ in range(count):
        started = time.perf_counter()
        stub.Predict(request, timeout=10)
        out.append((time.perf_counter() - started) * 1000)
    return out


def throughput(port: int, clients: int, seconds: float) -> float:
    request, done, stop = _request(), [0] * clients, threading.Event()

    def client(i: int) -> None:
        stub = _stub(port)
        stub.Predict(request, timeout=10)
        while not stop.is_set():
            stub.Predict(request, timeout=10)
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    start_count, started = sum(done), time.perf_counter()
    time.sleep(seconds)
    rate = (sum(done) - start_count) / (time.perf_counter() - started)
    stop.set()
    for t in threads:
        t.join()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    servers, ports = {}, {}
    for kind in ("asyncio", "threaded"):
        port = ctx.Value("i", 0)
        servers[kind] = ctx.Process(target=_serve, args=(kind, port), daemon=True)
        servers[kind].start()
        while not port.value:
            time.sleep(0.05)
        ports[kind] = port.value
    try:
        lat = {kind: [] for kind in ports}
        for _ in range(args.rounds):
            for kind, port in ports.items():
                lat[kind] += latencies(port, args.requests)
        rate = {kind: throughput(port, 32, args.seconds) for kind, port in ports.items()}
    finally:
        for process in servers.values():
            process.terminate()
    for kind in ports:
        values = sorted(lat[kind])
        p99 = values[int(0.99 * (len(values) - 1))]
        print(f"{kind:9} p50 {statistics.median(values):.3f} ms  p99 {p99:.3f} ms  "
              f"32 clients {rate[kind]:.0f} calls/s")  # fmt: skip
    p50 = {kind: statistics.median(lat[kind]) for kind in ports}
    print(f"threaded/asyncio: p50 {p50['threaded'] / p50['asyncio']:.2f}x, "
          f"32-client rate {rate['threaded'] / rate['asyncio']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
