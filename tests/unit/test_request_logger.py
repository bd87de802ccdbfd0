"""The request log writer: sampling, rotation, and drops counted when the queue is full."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.serving import request_log
from kerasflow.serving.manager import ModelManager
from kerasflow.serving.metrics import ServingMetrics
from kerasflow.serving.request_logger import RequestLogger, RequestLogOptions

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.unit


def offer(logger: RequestLogger, i: int) -> None:
    logger.offer(
        model="m",
        version=3,
        signature="serving_default",
        method="predict",
        inputs={"x": np.full((1, 2), i, np.float32), "s": np.array([b"caf\xc3\xa9"], object)},
        outputs={"output_0": np.array([[i * 0.5]], np.float32)},
    )


def test_records_rotate_into_whole_files_read_back_in_order(tmp_path):
    logger = RequestLogger(RequestLogOptions(str(tmp_path), max_bytes=300)).start()
    for i in range(10):
        offer(logger, i)
    logger.close()
    files = request_log.log_files(str(tmp_path), "m")
    assert len(files) > 2
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".part")]
    records = list(request_log.iter_records(str(tmp_path), "m"))
    assert [r["inputs"]["x"] for r in records] == [[[i, i]] for i in range(10)]
    assert records[0]["inputs"]["s"] == ["café"]
    assert records[3]["outputs"] == {"output_0": [[1.5]]} and records[3]["version"] == 3
    assert logger.written == 10 and logger.dropped == 0


def test_sampling_zero_logs_nothing(tmp_path):
    logger = RequestLogger(RequestLogOptions(str(tmp_path), sampling=0.0)).start()
    for i in range(5):
        offer(logger, i)
    logger.close()
    assert request_log.log_files(str(tmp_path), "m") == []


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    metrics = ServingMetrics(ModelManager([]))
    logger = RequestLogger(
        RequestLogOptions(str(tmp_path), queue_records=2),
        on_drop=metrics.count_log_dropped,
        on_write=metrics.count_logged,
    )
    for i in range(5):  # the writer is not started: nothing drains the queue
        offer(logger, i)
    assert logger.dropped == 3
    logger.start()
    logger.close()
    text = metrics.exposition().decode()
    dropped = 'kerasflow_serving_request_log_dropped_total{model_name="m",reason="queue_full"}'
    assert f"{dropped} 3.0" in text
    assert 'kerasflow_serving_request_log_records_total{model_name="m"} 2.0' in text
    assert len(list(request_log.iter_records(str(tmp_path), "m"))) == 2


def test_an_unwritable_log_counts_write_errors(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    logger = RequestLogger(RequestLogOptions(str(blocked))).start()
    offer(logger, 1)
    logger.close()
    assert logger.dropped == 1 and logger.written == 0


def test_an_object_store_log_is_uploaded_whole_when_rotated_and_closed(s3):
    uri = f"s3://{s3.bucket}/request-logs"
    logger = RequestLogger(RequestLogOptions(uri, max_bytes=300)).start()
    for i in range(4):
        offer(logger, i)
    logger.close()
    files = request_log.log_files(uri, "m")
    assert len(files) >= 2 and all(f.endswith(request_log.SUFFIX) for f in files)
    records = list(request_log.iter_records(uri, "m"))
    assert [r["inputs"]["x"] for r in records] == [[[i, i]] for i in range(4)]


def test_serve_flags_give_the_log_options_and_refuse_a_bad_sampling(tmp_path, capsys):
    from kerasflow.pipelines.cli import build_parser
    from kerasflow.serving.flags import request_log_from_args

    parser = build_parser()
    base = ["serve", f"--model_base_path={tmp_path}"]
    assert request_log_from_args(parser.parse_args(base)) is None
    args = parser.parse_args(
        [*base, f"--request_log_uri={tmp_path}/logs", "--request_log_sampling=0.25"]
    )
    options = request_log_from_args(args)
    assert (options.uri, options.sampling) == (f"{tmp_path}/logs", 0.25)
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--request_log_uri=x", "--request_log_sampling=1.5"])
    assert "is not between 0 and 1" in capsys.readouterr().err
