from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nucseg.runtime import (
    DeviceError,
    InputError,
    amp_dtype,
    atomic_write,
    autocast,
    image_to_tensor,
    resolve_device,
    tensor_to_image,
    write_bytes_atomic,
)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("abacus")


def test_autocast_dtype():
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16
    with autocast(torch.device("cpu"), enabled=False):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with autocast(torch.device("cpu"), enabled=True):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_image_to_tensor_ranges_and_round_trip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    unit = image_to_tensor(image)
    assert unit.shape == (3, 5, 7) and unit.dtype == torch.float32
    assert torch.equal(unit * 255, torch.from_numpy(image).permute(2, 0, 1).float())
    symmetric = image_to_tensor(image, "symmetric")
    assert torch.allclose(symmetric, unit * 2 - 1)
    np.testing.assert_array_equal(tensor_to_image(unit), image)
    np.testing.assert_array_equal(tensor_to_image(symmetric, "symmetric"), image)
    batch = image_to_tensor(np.stack([image, image]))
    assert batch.shape == (2, 3, 5, 7)
    with pytest.raises(InputError, match="RGB"):
        image_to_tensor(np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="dtype"):
        image_to_tensor(np.zeros((8, 8, 3), np.int16))
    with pytest.raises(InputError, match="value_range"):
        image_to_tensor(image, "percent")


def test_training_crops_use_the_same_scaling():
    from nucseg.data.dataset import CropDataset

    image = np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    sample = SimpleNamespace(image=image, instances=np.zeros((48, 48), np.int32), image_id="x")
    crop, _ = CropDataset([sample], crop_size=48)[0]  # crop == image size: the whole image
    assert torch.equal(image_to_tensor(image), crop.as_subclass(torch.Tensor))


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = write_bytes_atomic(tmp_path / "sub" / "a.txt", b"old")
    assert path.read_bytes() == b"old"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temp file left
    with atomic_write(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"


# --- CPU bfloat16 and the autocast decision ---------------------------------------------


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path):
    from nucseg.runtime import _cpu_flags

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")  # fmt: skip
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert _cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
    assert "bf16" in _cpu_flags(str(arm))
    assert _cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.parametrize(
    ("flags", "onednn", "native"),
    [
        ({"avx2", "fma"}, True, False),  # AVX2 only: no bf16 at all
        ({"avx512f", "avx512bw", "avx512_vnni"}, True, False),  # oneDNN would emulate it
        ({"avx512f", "avx512_bf16"}, True, True),
        ({"amx_bf16", "amx_tile"}, True, True),
        ({"asimd", "bf16"}, True, True),  # aarch64 BF16
        ({"avx512_bf16"}, False, False),  # torch built without oneDNN bf16
        (set(), True, False),  # no /proc/cpuinfo
    ],
)
def test_cpu_bf16_native(monkeypatch, flags, onednn, native):
    from nucseg import runtime

    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(runtime, "_mkldnn_bf16", lambda: onednn)
    assert runtime.cpu_bf16_native() is native


def test_cpu_bf16_native_agrees_with_this_machine():
    from nucseg import runtime

    hardware = bool(runtime._cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    assert runtime.cpu_bf16_native() == (hardware and runtime._mkldnn_bf16())


@pytest.mark.parametrize("native", [False, True])
def test_resolve_amp(monkeypatch, native):
    import warnings

    from nucseg import runtime

    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: native)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)  # no CUDA needed to decide
    assert runtime.resolve_amp(cuda, None) and runtime.resolve_amp(cuda, True)
    assert not runtime.resolve_amp(cuda, False)
    assert not runtime.resolve_amp(cpu, False)
    assert not runtime.resolve_amp(torch.device("meta"), True)
    assert runtime.resolve_amp(cpu, None) is native
    if native:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert runtime.resolve_amp(cpu, True)
    else:
        with pytest.warns(RuntimeWarning, match="no native bfloat16.*float32"):
            assert not runtime.resolve_amp(cpu, True)


def test_atomic_writes_get_the_permissions_of_an_ordinary_file(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "out.bin", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
