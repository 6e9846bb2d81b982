"""Build the packages of :mod:`tests.conformance.matrix` with bioimageio.spec objects.

Each package: a tiny :class:`~tests.conformance.nets.Net` (seeded) exported to its weight formats,
a test input, and the test outputs computed by bioimageio.core from that description (as its
``test_model`` recomputes them). The packages are written once into a cache folder named after a
hash of this generator's sources and the library versions (:func:`cache_root`) and reused by every
later run; ``python -m tests.conformance.generate`` builds them ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tests.conformance import core
from tests.conformance.matrix import (
    AXES,
    CASES,
    FIXED_IMAGE_SIZE,
    IMAGE_SIZE,
    MIN_STEP,
    TEST_SIZE,
    Case,
    In,
    Out,
)

HERE = Path(__file__).resolve().parent
SOURCES = ("matrix.py", "generate.py", "nets.py", "core.py", "reference.py")
OPSET = 17


def _versions() -> str:
    from importlib.metadata import version

    return ",".join(f"{p}={version(p)}" for p in ("torch", "bioimageio.spec", "bioimageio.core", "onnx"))


def generator_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((HERE / name).read_bytes())
    h.update(_versions().encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$EMZOO_CONFORMANCE_CACHE`` or ``<temp>/emzoo-conformance``, then the generator hash."""
    base = os.environ.get("EMZOO_CONFORMANCE_CACHE") or Path(tempfile.gettempdir()) / "emzoo-conformance"
    return Path(base) / generator_hash()


def seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def sample_input(case: Case, t: In, shape: tuple[int, ...], salt: str) -> np.ndarray:
    """A seeded image for input ``t`` (batch and channel first)."""
    rng = np.random.default_rng(seed(f"{case.name}/{t.id}/{salt}"))
    full = (1, t.channels, *shape)
    if t.dtype == "uint8":
        return rng.integers(0, 256, full).astype(np.uint8)
    if t.dtype == "uint16":
        return rng.integers(0, 4096, full).astype(np.uint16)
    return rng.normal(0.3, 1.2, full).astype(np.float32)


def image_shape(case: Case) -> tuple[int, ...]:
    return (FIXED_IMAGE_SIZE if case.fixed else IMAGE_SIZE)[case.dims]


def sample_inputs(case: Case, shape: tuple[int, ...], salt: str) -> dict[str, np.ndarray]:
    return {t.id: sample_input(case, t, shape, salt) for t in case.inputs}


# ---------------------------------------------------------------------------------- the network


def _heads(case: Case) -> list[dict]:
    return [{"channels": o.channels, "geometry": o.geometry} for o in case.outputs]


def _kwargs(case: Case) -> dict[str, Any]:
    return {
        "dims": case.dims,
        "in_channels": sum(t.channels for t in case.inputs),
        "heads": _heads(case),
        "kernel": case.conv,
        "layers": case.layers,
    }


def _network(case: Case):
    import torch

    from tests.conformance.nets import Net

    torch.manual_seed(seed(case.name) % 2**31)
    return Net(**_kwargs(case)).eval()


def _export(case: Case, net, example: list[np.ndarray], staging: Path) -> dict[str, Path]:
    import torch

    tensors = tuple(torch.from_numpy(x.astype(np.float32)) for x in example)
    files: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "onnx" in case.weights:
            names_in = [t.id for t in case.inputs]
            names_out = [o.id for o in case.outputs]
            dynamic = {n: {d: f"{n}_{d}" for d in range(2 + case.dims) if d != 1} for n in names_in}
            for o in case.outputs:
                first = 3 if o.geometry == "unsqueeze" else 2  # an unsqueezed z stays 1
                dims = [0, *range(first, first + case.dims)]
                dynamic[o.id] = {d: f"{o.id}_{d}" for d in dims}
            files["onnx"] = staging / "weights.onnx"
            torch.onnx.export(
                net,
                tensors,
                str(files["onnx"]),
                dynamo=False,
                opset_version=OPSET,
                input_names=names_in,
                output_names=names_out,
                dynamic_axes=dynamic,
            )
        if "torchscript" in case.weights:
            files["torchscript"] = staging / "weights.pt"
            traced = torch.jit.trace(net, tensors, check_trace=False)
            traced.save(str(files["torchscript"]))
        if "pytorch_state_dict" in case.weights:
            files["pytorch_state_dict"] = staging / "weights_state_dict.pt"
            torch.save(net.state_dict(), files["pytorch_state_dict"])
            shutil.copy(HERE / "nets.py", staging / "nets.py")
    return files


# ---------------------------------------------------------------------------- 0.5 descriptions


def _size5(case: Case, t: In, k: int, letter: str):
    from bioimageio.spec.model import v0_5

    if t.size == "fixed":
        return TEST_SIZE[case.dims][k]
    if t.size == "ref":
        return v0_5.SizeReference(tensor_id=case.inputs[0].id, axis_id=letter)
    lo, step = MIN_STEP[case.dims]
    return v0_5.ParameterizedSize(min=lo, step=step)


def _proc5(ops, kind: str):
    from bioimageio.spec.model import v0_5
    from pydantic import TypeAdapter

    adapter = TypeAdapter(v0_5.PreprocessingDescr if kind == "pre" else v0_5.PostprocessingDescr)
    return [adapter.validate_python(op) for op in ops]


def _input5(case: Case, t: In, test: Path):
    from bioimageio.spec.common import FileDescr
    from bioimageio.spec.model import v0_5

    axes: list[Any] = [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[f"c{i}" for i in range(t.channels)])]
    for k, letter in enumerate(AXES[case.dims]):
        axes.append(v0_5.SpaceInputAxis(id=letter, size=_size5(case, t, k, letter)))
    return v0_5.InputTensorDescr(
        id=t.id,
        axes=axes,
        test_tensor=FileDescr(source=test),
        data=v0_5.IntervalOrRatioDataDescr(type=t.dtype),
        preprocessing=_proc5(t.pre, "pre"),
    )


def _output5(case: Case, o: Out, test: Path):
    from bioimageio.spec.common import FileDescr
    from bioimageio.spec.model import v0_5

    names = [f"c{i}" for i in range(o.channels)]
    first = (
        v0_5.ChannelAxis(channel_names=names)
        if o.channel_type == "channel"
        else v0_5.IndexOutputAxis(id="index", size=o.channels)
    )
    axes: list[Any] = [v0_5.BatchAxis(), first]
    if o.geometry == "unsqueeze":
        axes.append(v0_5.SpaceOutputAxis(id="z", size=1))
    scale = {"up": 0.5, "down": 2.0}.get(o.geometry, 1.0)
    offset = -4 if o.geometry == "crop2" else 0
    for letter in AXES[case.dims]:
        size = v0_5.SizeReference(tensor_id=case.inputs[o.ref].id, axis_id=letter, offset=offset)
        if o.halo:
            axes.append(v0_5.SpaceOutputAxisWithHalo(id=letter, size=size, halo=o.halo, scale=scale))
        else:
            axes.append(v0_5.SpaceOutputAxis(id=letter, size=size, scale=scale))
    data = (
        v0_5.NominalOrOrdinalDataDescr(type="bool", values=[False, True])
        if o.dtype == "bool"
        else v0_5.IntervalOrRatioDataDescr(type=o.dtype)
    )
    return v0_5.OutputTensorDescr(
        id=o.id,
        axes=axes,
        test_tensor=FileDescr(source=test),
        data=data,
        postprocessing=_proc5(o.post, "post"),
    )


def _weights5(case: Case, files: dict[str, Path], staging: Path):
    import torch
    from bioimageio.spec.model import v0_5

    version = v0_5.Version(torch.__version__.split("+")[0])
    root = next(f for f in ("pytorch_state_dict", "torchscript", "onnx") if f in files)
    parent = {f: (None if f == root else root) for f in files}
    entries: dict[str, Any] = {}
    if "pytorch_state_dict" in files:
        entries["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=files["pytorch_state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(
                source=staging / "nets.py", callable="Net", kwargs=_kwargs(case)
            ),
            pytorch_version=version,
        )
    if "torchscript" in files:
        entries["torchscript"] = v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=version, parent=parent["torchscript"]
        )
    if "onnx" in files:
        entries["onnx"] = v0_5.OnnxWeightsDescr(
            source=files["onnx"], opset_version=OPSET, parent=parent["onnx"]
        )
    return v0_5.WeightsDescr(**entries)


def _model5(case: Case, files, tests_in, tests_out, staging: Path):
    from bioimageio.spec.common import FileDescr
    from bioimageio.spec.model import v0_5

    config: dict[str, Any] = {}
    if case.tolerance:
        config = {"bioimageio": {"reproducibility_tolerance": [dict(case.tolerance)]}}
    return v0_5.ModelDescr(
        name=case.name,
        description=f"conformance package {case.name}",
        authors=[v0_5.Author(name="emzoo conformance")],
        cite=[v0_5.CiteEntry(text="emzoo conformance suite", doi="10.5281/zenodo.1")],
        license="MIT",
        documentation=FileDescr(source=staging / "README.md"),
        inputs=[_input5(case, t, tests_in[t.id]) for t in case.inputs],
        outputs=[_output5(case, o, tests_out[o.id]) for o in case.outputs],
        weights=_weights5(case, files, staging),
        config=config,
    )


# ---------------------------------------------------------------------------- 0.4 descriptions


def _shape4(case: Case, t: In):
    from bioimageio.spec.model import v0_4

    n = case.dims
    if t.size == "fixed":
        return [1, t.channels, *TEST_SIZE[n]]
    lo, step = MIN_STEP[n]
    return v0_4.ParameterizedInputShape(min=[1, t.channels, *[lo] * n], step=[0, 0, *[step] * n])


def _output_shape4(case: Case, o: Out):
    from bioimageio.spec.model import v0_4

    n = case.dims
    if o.fixed:
        return [1, o.channels, *TEST_SIZE[n]]
    scale = {"up": 2.0, "down": 0.5}.get(o.geometry, 1.0)
    offset = -2.0 if o.geometry == "crop2" else 0.0
    return v0_4.ImplicitOutputShape(
        reference_tensor=case.inputs[o.ref].id,
        scale=[1.0, 0.0, *[scale] * n],
        offset=[0.0, o.channels / 2, *[offset] * n],
    )


def _model4(case: Case, files, tests_in, tests_out, staging: Path):
    import torch
    from bioimageio.spec.model import v0_4

    letters = "bc" + AXES[case.dims]
    inputs = [
        v0_4.InputTensorDescr(
            name=t.id, axes=letters, data_type=t.dtype, shape=_shape4(case, t), preprocessing=list(t.pre)
        )
        for t in case.inputs
    ]
    outputs = [
        v0_4.OutputTensorDescr(
            name=o.id,
            axes=letters,
            data_type=o.dtype,
            shape=_output_shape4(case, o),
            halo=[0, 0, *[o.halo] * case.dims] if o.halo else None,
            postprocessing=list(o.post),
        )
        for o in case.outputs
    ]
    version = torch.__version__.split("+")[0]
    weights: dict[str, Any] = {}
    if "onnx" in files:
        weights["onnx"] = v0_4.OnnxWeightsDescr(source=files["onnx"], opset_version=OPSET)
    if "torchscript" in files:
        weights["torchscript"] = v0_4.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=version
        )
    if "pytorch_state_dict" in files:
        weights["pytorch_state_dict"] = v0_4.PytorchStateDictWeightsDescr(
            source=files["pytorch_state_dict"],
            architecture="nets.py:Net",
            architecture_sha256=hashlib.sha256((staging / "nets.py").read_bytes()).hexdigest(),
            kwargs=_kwargs(case),
            pytorch_version=version,
        )
    return v0_4.ModelDescr(
        format_version="0.4.10",
        name=case.name,
        description=f"conformance package {case.name}",
        authors=[v0_4.Author(name="emzoo conformance")],
        cite=[v0_4.CiteEntry(text="emzoo conformance suite", doi="10.5281/zenodo.1")],
        license="MIT",
        documentation=staging / "README.md",
        test_inputs=[tests_in[t.id] for t in case.inputs],
        test_outputs=[tests_out[o.id] for o in case.outputs],
        inputs=inputs,
        outputs=outputs,
        weights=v0_4.WeightsDescr(**weights),
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
    )


# ------------------------------------------------------------------------------------ building


def build(case: Case, target: Path) -> Path:
    """Build one package folder at ``target`` (its rdf.yaml is returned)."""
    from bioimageio.spec import ValidationContext, save_bioimageio_package_as_folder

    staging = Path(tempfile.mkdtemp(prefix=f"{case.name}-"))
    try:
        (staging / "README.md").write_text(f"# {case.name}\n\nA generated emzoo conformance package.\n")
        tests_in = {}
        inputs = sample_inputs(case, TEST_SIZE[case.dims], "test")
        for t in case.inputs:
            tests_in[t.id] = staging / f"test_input_{t.id}.npy"
            np.save(tests_in[t.id], inputs[t.id])
        net = _network(case)
        files = _export(case, net, [inputs[t.id] for t in case.inputs], staging)
        tests_out = {o.id: staging / f"test_output_{o.id}.npy" for o in case.outputs}
        for path in tests_out.values():
            np.save(path, np.zeros((1,), np.float32))  # placeholders until bioimageio.core fills them
        make = _model5 if case.spec == "0.5" else _model4
        with ValidationContext(root=staging, perform_io_checks=False):
            descr = make(case, files, tests_in, tests_out, staging)
        outputs = core.predict(
            descr,
            inputs,
            weight_format=next(iter(files)),
            mode="test",
            reference_post=case.core_fails is not None,
        )
        for o in case.outputs:
            data = outputs[o.id]
            if case.quirk == "broken":
                data = (data.astype(np.float64) + 0.5).astype(data.dtype) if data.dtype != bool else ~data
            np.save(tests_out[o.id], data)
        with ValidationContext(root=staging):
            descr = make(case, files, tests_in, tests_out, staging)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save_bioimageio_package_as_folder(descr, output_path=target)
        rdf = target / "rdf.yaml"
        if "pytorch_state_dict" in files and not (target / "nets.py").exists():
            shutil.copy(HERE / "nets.py", target / "nets.py")  # 0.4: the architecture is a "file:name" string
        if case.quirk == "npy_samples":
            _add_npy_samples(rdf, case)
        return rdf
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _add_npy_samples(rdf: Path, case: Case) -> None:
    """0.4 packages may list .npy files as ``sample_inputs``/``sample_outputs`` (bioimageio.spec's
    conversion to 0.5 cannot read them as images)."""
    import yaml

    content = yaml.safe_load(rdf.read_text())
    content["sample_inputs"] = list(content["test_inputs"])
    content["sample_outputs"] = list(content["test_outputs"])
    rdf.write_text(yaml.safe_dump(content, sort_keys=False))


def generate(root: Path | None = None, *, cases=CASES, log=None) -> Path:
    """Every package of ``cases`` under ``root`` (default :func:`cache_root`), built where missing."""
    from loguru import logger

    logger.disable("bioimageio")
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    for case in cases:
        folder = root / case.name
        if (folder / "rdf.yaml").is_file():
            continue
        t0 = time.perf_counter()
        partial = root / f".{case.name}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build(case, partial)
        try:
            partial.rename(folder)
        except OSError:  # another process finished it first
            shutil.rmtree(partial, ignore_errors=True)
        if log is not None:
            log(f"{case.name}: {time.perf_counter() - t0:.1f} s")
    (root / "generated.json").write_text(
        json.dumps({"versions": _versions(), "cases": [c.name for c in CASES]})
    )
    return root


def package(name: str) -> Path:
    """The folder of one generated package (built when missing)."""
    from tests.conformance.matrix import BY_NAME

    root = generate(cases=(BY_NAME[name],))
    return root / name


if __name__ == "__main__":
    start = time.perf_counter()
    names = sys.argv[1:]
    chosen = [c for c in CASES if not names or c.name in names]
    where = generate(cases=chosen, log=print)
    print(f"{len(chosen)} packages in {where} ({time.perf_counter() - start:.0f} s)")
