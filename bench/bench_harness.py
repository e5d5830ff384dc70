"""The serial harness: throughput beside the line's limit, and validation through injected faults.

The default digits CNN (trained, not pruned: this measures the link, not the
model) is validated over QEMU's socket cleanly, through the fault proxy at
several damage rates, and over a pseudo-terminal to the host build. Each row
says how many bytes the proxy damaged, what the client did about it, and how
many wrong results were accepted (the agreement must stay 100%).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import BenchResult

BAUD = 115200

FAULTS: list[tuple[str, dict[str, float]]] = [
    ("none", {}),
    ("corrupt 1%", {"corrupt": 0.01}),
    ("corrupt 3%", {"corrupt": 0.03}),
    ("drop+corrupt+dup+delay 1% each", {"corrupt": 0.01, "drop": 0.01, "duplicate": 0.01,
                                        "delay": 0.01}),
]


def _make_run(root: Path, epochs: int) -> Any:
    from microfit import stages
    from microfit.export.onnx_export import export_onnx
    from microfit.runfolder import RunFolder

    run = RunFolder(root / "run").ensure()
    run.update_settings(target="qemu-mps2-an386")
    stages.stage_train(run, epochs=epochs, progress=False)
    export_onnx(stages._load_model(run, "float.pt"), (1, 1, 8, 8), run.file("float.onnx"))
    stages.stage_quantize(run)
    stages.stage_generate(run)
    stages.stage_build(run)
    return run


def _data(run: Any, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
    from microfit.ir.graph import Graph
    from microfit.ir.onnx_import import nchw_to_ir
    from microfit.quantize.quantize import quantize_input
    from microfit.reference.executor import run_int8
    from microfit.train.data import load_splits

    q = Graph.load(run.need("quant.json"), run.need("quant.npz"))
    splits = load_splits(run.need("data.npz"))
    xq = quantize_input(nchw_to_ir(splits.x_test[:limit]), q.tensors[q.inputs[0]].quant)
    expected = run_int8(q, xq).reshape(len(xq), -1)
    return xq.reshape(len(xq), -1), splits.y_test[:limit], expected, q.content_hash()[:8]


def _row(link: str, faults: str, res: Any, proxy: Any = None) -> dict[str, Any]:
    tp = res.throughput()
    lk = res.link
    damaged = None
    if proxy is not None:
        damaged = proxy.stats.to_device.damaged + proxy.stats.to_host.damaged
    return {
        "link": link, "faults": faults, "samples": res.samples,
        "damaged_bytes": damaged, "retries": res.retries,
        "corrupt_replies": lk["crc_errors"], "unreadable_requests": lk["device_link_errors"],
        "timeouts": lk["timeouts"],
        "redone": lk["input_crc_mismatches"] + lk["stale_runs"] + lk["output_crc_mismatches"],
        "wrong_accepted": len(res.mismatches), "samples_per_s": tp["samples_per_s"],
        "line_limit": tp["line_limit_samples_per_s"], "bytes_per_sample": tp["wire_bytes_per_sample"],
    }


def run(quick: bool = False) -> BenchResult:
    from microfit.emulate.qemu import QemuSession
    from microfit.harness.client import DeviceClient
    from microfit.harness.faultproxy import FaultConfig, FaultProxy
    from microfit.harness.hostdev import HostDevice, build_host_device
    from microfit.harness.validate import validate
    from microfit.target.boards import load_board

    limit = 60 if quick else 400
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        run_ = _make_run(Path(tmp), epochs=3 if quick else 15)
        notes.append(f"model set-up (train, export, quantize, generate, build): {time.time() - t0:.1f} s")
        x, y, expected, model_hash = _data(run_, limit)
        board = load_board("qemu-mps2-an386")
        elf = Path(run_.read_json("build.json")["elf"])
        for name, rates in FAULTS:
            with QemuSession(board, elf) as device_url:
                proxy = FaultProxy(device_url, FaultConfig(seed=7, max_delay_s=0.002, **rates)) \
                    if rates else None
                url = proxy.start() if proxy else device_url
                try:
                    with DeviceClient(url, baud=BAUD, timeout=0.5 if rates else 5.0,
                                      invoke_timeout=2.0, retries=40) as client:
                        client.hello(expected_hash=model_hash)
                        res = validate(client, x, labels=y, expected=expected, progress=False)
                finally:
                    if proxy:
                        proxy.close()
            rows.append(_row("QEMU socket", name, res, proxy))
        exe = build_host_device(run_.need("generated"), Path(tmp) / "hostdev")
        with HostDevice(exe) as port, DeviceClient(port, baud=BAUD) as client:
            client.hello(expected_hash=model_hash)
            res = validate(client, x, labels=y, expected=expected, progress=False)
            rows.append(_row("host pty", "none", res))
            notes.append(f"host build latency (ns clock, median): {res.counter.median / 1e3:,.1f} us")
    notes += [
        "damaged_bytes: bytes the proxy dropped, corrupted or duplicated (both directions); "
        "retries: resends + redone inferences; wrong_accepted must be 0 (outputs compared "
        "byte for byte with the numpy reference)",
        f"line_limit: samples/s an 8N1 line at {BAUD} baud could carry with the bytes this "
        "run exchanged per sample; QEMU's socket and the pty are not rate-limited",
    ]
    columns = ["link", "faults", "samples", "damaged_bytes", "retries", "corrupt_replies",
               "unreadable_requests", "timeouts", "redone", "wrong_accepted", "samples_per_s",
               "line_limit", "bytes_per_sample"]
    return BenchResult("harness", "Serial harness: throughput and fault injection", columns, rows,
                       notes)
