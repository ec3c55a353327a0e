"""Multi-process training through torchrun: two CPU processes (gloo backend), DDP, rank-0 logging and saving."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from .helpers import tiny_config, write_simple_cases


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_train_one_run_and_only_rank_zero_writes_it(tmp_path):
    config = tiny_config(
        write_simple_cases(tmp_path / "data", count=4), train={"steps": 2, "log_every": 1, "val_every": 2}
    )
    (tmp_path / "ddp.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "-m", "medtrans_training", "train", str(tmp_path / "ddp.json"),
        "--run-dir", str(run), "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["device"]["world_size"] == 2 and record["device"]["type"] == "cpu"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["step"]) for r in lines] == [("train", 1), ("train", 2), ("val", 2)]  # one writer
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
    assert done.stdout.count('"run_dir"') == 1  # the summary line comes from rank 0 only
