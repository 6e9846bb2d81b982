#!/usr/bin/env bash
# Every GPU figure of issue 14 in one run (under 7 minutes on one GPU; installs nothing).
#
# Usage (from anywhere; uses .venv/bin/python when there is one, else $PYTHON or python):
#   bash benchmarks/gpu_check.sh [MODEL]        # MODEL: default zoo_models/em-membrane-unet2d
#
# Prints, on one 4096x4096 EM image (real ISBI slices when ../shared/data is there, else synthetic):
#   1. emzoo (torchscript weights, --device cuda, the batch from free memory): Mpx/s, best of 3 after a
#      warm-up; and without the prefetching pipeline (next batch read while one runs, stitching overlapped)
#   2. a plain torch loop over the same tiles (the blocks emzoo's plan cuts, normalised as emzoo does):
#      with emzoo's batch size and with batch 16, pinned host memory and asynchronous copies;
#      emzoo's share of the plain loop's throughput (goal >= 80 %)
#   3. onnxruntime's CUDA provider through emzoo (onnx weights), when onnxruntime-gpu is installed
#   4. fp16 and bf16 autocast: emzoo's own (--precision fp16/bf16: Mpx/s and the deviation it reports);
#      a plain loop's deviation from fp32 on the package's test input, Mpx/s on the same tiles, and the
#      fraction of the GPU's dense fp16/bf16 peak (FLOPs counted by torch; peak from a table by GPU
#      name, or PEAK_TFLOPS=...)
#   5. the out-of-memory fallback on the real GPU: torch's memory capped at 2 GiB, --batch-size 32:
#      the halvings emzoo reports, and the output's difference from a batch-1 run
# Exits 2 at once, with the reason, when there is no CUDA device or no torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
MODEL="${1:-zoo_models/em-membrane-unet2d}"

timeout 60 "$PY" - <<'EOF' || exit 2
import sys
try:
    import torch
except ImportError:
    sys.exit("gpu_check: torch is not installed (pip install torch, or the [train] extra of emzoo)")
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False, torch "
             f"{torch.__version__}, CUDA build {torch.version.cuda}): run it on a machine with an NVIDIA GPU")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

export GPU_CHECK_MODEL="$MODEL" PYTHONUNBUFFERED=1  # lines as they come, also when cut short
timeout 400 "$PY" - <<'EOF'
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, ".")
from predict_vs_bioimageio import em_like  # noqa: E402

from emzoo.io import Image, ImageMeta  # noqa: E402
from emzoo.runtime.predictor import Predictor  # noqa: E402

MODEL = os.environ["GPU_CHECK_MODEL"]
SIZE = 4096
MPX = SIZE * SIZE / 1e6
PEAKS = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10": 125, "V100": 125, "T4": 65}


def best(fn, runs=3):
    fn()  # warm-up (cuDNN autotuning, allocations)
    times = []
    for _ in range(runs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


image = em_like(SIZE)
torch.backends.cudnn.benchmark = True
emz = Predictor(MODEL, weight_format="torchscript", device="cuda")
t_emzoo = best(lambda: emz.predict(Image(image, ImageMeta(axes="yx"))))
plan = emz.last_plan
print(f"\n1. emzoo predict (torchscript, {emz.device}): {t_emzoo:.3f} s = {MPX / t_emzoo:.1f} Mpx/s "
      f"({plan.n_tiles} blocks of {'x'.join(str(a.block) for a in plan.axes)}, batch {plan.batch_size} "
      "from free memory)")
emz.batches.prefetch = False
t_serial = best(lambda: emz.predict(Image(image, ImageMeta(axes="yx"))), runs=2)
emz.batches.prefetch = True
print(f"   without the prefetching pipeline: {t_serial:.3f} s = {MPX / t_serial:.1f} Mpx/s "
      f"(pipeline speed-up {t_serial / t_emzoo:.2f}x)")

# the same blocks, normalised as emzoo normalises them: recorded from emzoo's own run
class Recorder:
    def __init__(self, backend):
        self.backend, self.format, self.device, self.blocks = backend, backend.format, backend.device, []

    def run(self, inputs):
        self.blocks.append(np.array(inputs[0]))
        return self.backend.run(inputs)


def recorded(fn):
    recorder = Recorder(emz.backend)
    emz.backend = recorder
    try:
        fn()
    finally:
        emz.backend = recorder.backend
    return np.concatenate(recorder.blocks)  # batch axis first


tensor = emz.spec.inputs[0]
blocks = recorded(lambda: emz.predict(Image(image, ImageMeta(axes="yx"))))
host = torch.from_numpy(blocks).pin_memory()
module = emz.backend.module
out_host = None


def plain(batch, dtype=None):
    global out_host
    outs = []
    stream = torch.cuda.Stream()
    with torch.inference_mode(), torch.cuda.stream(stream):
        for i in range(0, host.shape[0], batch):
            x = host[i : i + batch].to("cuda", non_blocking=True)
            if dtype is None:
                y = module(x)
            else:
                with torch.autocast("cuda", dtype=dtype):
                    y = module(x)
            outs.append(y.float().to("cpu", non_blocking=True))
    stream.synchronize()
    out_host = outs


print("\n2. plain torch loop over the same blocks (pinned memory, async copies):")
plain_times = {}
for batch in sorted({plan.batch_size, 16}):
    plain_times[batch] = best(lambda b=batch: plain(b))
    print(f"   batch {batch:>2}: {plain_times[batch]:.3f} s = {MPX / plain_times[batch]:.1f} Mpx/s")
same = plain_times[plan.batch_size]
print(f"   emzoo / plain loop (batch {plan.batch_size}) throughput: {100 * same / t_emzoo:.0f} % (goal >= 80 %)")
fastest = min(plain_times.values())
print(f"   emzoo / fastest plain loop: {100 * fastest / t_emzoo:.0f} %")

print("\n3. onnxruntime CUDA provider:")
try:
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"   not available (onnxruntime {ort.__version__} has {', '.join(ort.get_available_providers())})")
    elif "onnx" not in emz.spec.weights:
        print("   the package has no onnx weights")
    else:
        onnx_p = Predictor(MODEL, weight_format="onnx", device="cuda")
        t_ort = best(lambda: onnx_p.predict(Image(image, ImageMeta(axes="yx"))), runs=2)
        print(f"   emzoo (onnx, {onnx_p.device}): {t_ort:.3f} s = {MPX / t_ort:.1f} Mpx/s; "
              f"onnxruntime-CUDA / torch time: {t_ort / t_emzoo:.2f}")
except ImportError:
    print("   onnxruntime is not installed")

print("\n4. fp16 / bf16 autocast through emzoo (--precision), its deviation as it reports it:")
from emzoo.runtime.settings import DeviceSpec, TileSettings  # noqa: E402

for label in ("fp16", "bf16"):
    low_p = Predictor(MODEL, weight_format="torchscript", device=DeviceSpec.parse("cuda", precision=label))
    t_low = best(lambda p=low_p: p.predict(Image(image, ImageMeta(axes="yx"))), runs=2)
    print(f"   emzoo {label}: {t_low:.3f} s = {MPX / t_low:.1f} Mpx/s ({t_emzoo / t_low:.2f}x fp32, batch "
          f"{low_p.last_plan.batch_size}); {low_p.precision.note()}")
print("   plain loop, batch 16, and deviation from fp32 on the test input:")
test_in = np.load(emz.package.file(tensor.test_tensor))
x = torch.from_numpy(recorded(lambda: emz.run({tensor.id: test_in}))).cuda()
with torch.inference_mode():
    ref = module(x).float()
try:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(host[:1].cuda())
    flops_block = counter.get_total_flops()
except Exception as e:  # TorchScript modules may not be countable
    flops_block = None
    print(f"   (FLOPs not counted: {type(e).__name__}: {e})")
name = torch.cuda.get_device_name(0)
peak = float(os.environ.get("PEAK_TFLOPS") or next((v for k, v in PEAKS.items() if k in name), 0))
for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
        low = module(x).float()
    diff = (low - ref).abs()
    span = float(ref.max() - ref.min()) or 1.0
    t = best(lambda d=dtype: plain(16, d))
    line = (f"   {label}: max abs {float(diff.max()):.3g}, mean abs {float(diff.mean()):.3g} "
            f"(max {100 * float(diff.max()) / span:.2g} % of the fp32 range); {MPX / t:.1f} Mpx/s "
            f"({fastest / t:.2f}x the fp32 speed)")
    if flops_block:
        tflops = flops_block * host.shape[0] / t / 1e12
        share = f", {100 * tflops / peak:.1f} % of the {peak:.0f} TFLOP/s {label} peak" if peak else ""
        line += f"; {tflops:.3g} TFLOP/s{share}"
    print(line)
print(f"\nfp32 plain loop: {MPX / fastest:.1f} Mpx/s" + (
    f", {flops_block * host.shape[0] / fastest / 1e12:.3g} TFLOP/s" if flops_block else ""))

print("\n5. out-of-memory fallback (torch capped at 2 GiB of the GPU, --batch-size 32, 512 px tiles):")
part = Image(image[:2048, :2048], ImageMeta(axes="yx"))
one = Predictor(MODEL, weight_format="torchscript", device="cuda", settings=TileSettings(tile=(512,), batch_size=1))
ref_out = one.predict(part)
del one, emz, low_p, module, host, x, out_host
torch.cuda.empty_cache()
torch.cuda.set_per_process_memory_fraction(2 * 2**30 / torch.cuda.get_device_properties(0).total_memory)
big = Predictor(MODEL, weight_format="torchscript", device="cuda", settings=TileSettings(tile=(512,), batch_size=32))
try:
    got = big.predict(part)
    diff = max(float(np.abs(got[k].data - ref_out[k].data).max()) for k in got)
    print(f"   {'; '.join(big.batches.notes) or 'no halving needed (32 blocks fit in 2 GiB)'}")
    print(f"   max abs difference from the batch-1 output: {diff:.3g}")
except Exception as e:  # the fallback's own one-line error at batch 1
    print(f"   failed: {type(e).__name__}: {e}")
EOF
