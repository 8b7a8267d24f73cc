"""Device and precision choice with the accelerator mocked: CUDA 7.x (bf16 only emulated), 8.0 and
later, no CUDA, Apple's MPS; the autocast and gradient-scaler pieces; cuDNN autotuning on CUDA only."""

import pytest
import torch

from helpers import hardware


@pytest.fixture
def machine(monkeypatch):
    """Set what torch reports: machine(cuda=(8, 0)) or machine(mps=True) or machine()."""

    def set_(cuda=None, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda is not None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on 7.x
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_


@pytest.mark.parametrize(
    "cap, want",
    [
        ((7, 0), "fp16"),
        ((7, 5), "fp16"),
        ((8, 0), "bf16"),
        ((8, 6), "bf16"),
        ((9, 0), "bf16"),
        ((12, 0), "bf16"),
        ((6, 1), "fp32"),
    ],
)
def test_auto_on_cuda_follows_the_compute_capability(machine, cap, want):
    machine(cuda=cap)
    got, why = hardware.choose_precision("auto", "cuda")
    assert got == want
    assert f"{cap[0]}.{cap[1]}" in why
    assert {"fp16": "fp16 autocast with a gradient scaler", "bf16": "bf16 natively", "fp32": "fp32"}[want] in why
    # the same answer when the capability is injected instead of read
    assert hardware.choose_precision("auto", "cuda", capability=cap) == (got, why)


def test_requests_on_cuda(machine):
    machine(cuda=(7, 0))
    assert hardware.choose_precision("bf16", "cuda")[0] == "fp32"  # emulated bf16 is refused
    assert hardware.choose_precision("fp16", "cuda")[0] == "fp16"
    assert hardware.choose_precision("fp32", "cuda") == ("fp32", "fp32 requested")
    assert hardware.choose_precision("bf16", "cuda", capability=(9, 0))[0] == "bf16"
    assert hardware.choose_precision("fp16", "cuda", capability=(9, 0))[0] == "fp16"
    assert hardware.choose_precision("auto", "cuda", capability=(7, 0), cuda_bf16=True)[0] == "bf16"
    with pytest.raises(ValueError, match="precision='fp8' is not allowed"):
        hardware.choose_precision("fp8", "cuda")


def test_cpu_precision_is_unchanged():
    assert hardware.choose_precision("auto", "cpu", flags={"avx2"})[0] == "fp32"
    assert hardware.choose_precision("auto", "cpu", flags={"avx2", "avx512_bf16"}) == (
        "bf16",
        "this CPU (avx512_bf16) computes bf16 natively",
    )
    assert hardware.choose_precision("bf16", "cpu", flags={"amx_bf16"})[0] == "bf16"
    assert hardware.choose_precision("fp32", "cpu", flags={"amx_bf16"})[0] == "fp32"
    assert hardware.choose_precision("fp16", "cpu", flags={"amx_bf16"})[0] == "fp32"
    assert "no native bf16" in hardware.choose_precision("bf16", "cpu", flags=set())[1]


def test_device_choice(machine):
    machine(cuda=(8, 0), mps=True)
    assert hardware.pick_device("auto").type == "cuda" and hardware.pick_device(None).type == "cuda"
    machine(mps=True)
    assert hardware.pick_device("auto").type == "mps"
    assert hardware.pick_device("mps").type == "mps"
    assert hardware.choose_precision("auto", "mps")[0] == "fp32"
    with pytest.raises(ValueError, match="device='cuda' is not allowed here"):
        hardware.pick_device("cuda")
    machine()
    assert hardware.pick_device("auto").type == "cpu" and hardware.pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device='mps' is not allowed here"):
        hardware.pick_device("mps")
    with pytest.raises(ValueError, match="device='tpu' is not allowed"):
        hardware.pick_device("tpu")
    assert hardware.pick_device(torch.device("cpu")) == torch.device("cpu")
    assert "mps" in hardware.DEVICE_CHOICES and hardware.available_devices() == ("auto", "cpu")
    assert hardware.capabilities()["mps"] is False and hardware.capabilities()["cuda"] is False


def test_capabilities_on_a_mocked_gpu(machine, monkeypatch):
    machine(cuda=(7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *_: type("P", (), {"total_memory": 16 * 2**30})())
    caps = hardware.capabilities()
    assert caps["gpu"] == "Tesla T4" and caps["compute_capability"] == "7.5"
    assert caps["cuda_bf16_native"] is False and caps["gpu_memory_gib"] == 16.0


def test_autocast_and_grad_scaler(machine):
    x = torch.randn(4, 4)
    with hardware.autocast("cpu", "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with hardware.autocast("cpu", "fp32"):
        assert (x @ x).dtype == torch.float32
    # fp32 also switches off an autocast around it
    with torch.autocast("cpu", dtype=torch.bfloat16), hardware.autocast("cpu", "fp32"):
        assert (x @ x).dtype == torch.float32
    assert isinstance(hardware.autocast("cuda", "fp16"), torch.autocast)
    for precision in ("fp32", "bf16"):
        scaler = hardware.grad_scaler("cpu", precision)
        assert not scaler.is_enabled()
        loss = (x * 2).sum()
        assert scaler.scale(loss) is loss
    machine(cuda=(7, 5))  # a scaler for CUDA is built only where CUDA is (none is allocated yet)
    assert hardware.grad_scaler("cuda", "fp16").is_enabled()
    assert not hardware.grad_scaler("cuda", "bf16").is_enabled()
    with pytest.raises(ValueError, match="precision='auto' is not allowed"):
        hardware.autocast("cpu", "auto")


def test_a_disabled_scaler_steps_exactly_like_a_plain_optimiser():
    def run(use_scaler):
        torch.manual_seed(0)
        net = torch.nn.Linear(5, 3)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        scaler = hardware.grad_scaler("cpu", "fp32")
        for i in range(5):
            loss = net(torch.randn(8, 5, generator=torch.Generator().manual_seed(i))).square().mean()
            opt.zero_grad()
            if use_scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        return [p.detach().clone() for p in net.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(run(True), run(False)))


def test_configure_turns_on_cudnn_autotuning_on_cuda_only(machine, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    machine()
    assert hardware.configure("cpu") == {} and torch.backends.cudnn.benchmark is False
    machine(cuda=(9, 0))
    assert hardware.configure("cuda") == {"cudnn.benchmark": True} and torch.backends.cudnn.benchmark is True


def test_degradation_range_check_on_an_accelerator_is_deferred_not_dropped(monkeypatch):
    """On the CPU a bad step raises at once; on an accelerator (mocked: the CPU treated as one) the
    check is accumulated on the device and read every CHECK_EVERY calls, with no host sync between."""
    from helpers import degradations
    from helpers.degradations import RowColumnAveraging

    op, x = RowColumnAveraging(group=4), torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"t=\[8\] is out of range; expected steps in 0\.\.7"):
        op.degrade(x, torch.tensor([0, 8]))
    with pytest.raises(ValueError, match=r"t=\[9\] is out of range"):
        op.degrade(x, 9)
    monkeypatch.setattr(degradations, "_checks_at_once", lambda device: False)
    reads = []
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: reads.append(1) or bool(self.item()))
    good = op.degrade(x, torch.tensor([1, 7]))
    assert torch.equal(good, RowColumnAveraging(group=4).degrade(x, torch.tensor([1, 7])))
    for _ in range(degradations.CHECK_EVERY - 3):
        op.degrade(x, torch.tensor([3, 4]))
    op.degrade(x, torch.tensor([0, 8]))  # wrong, not read yet
    assert reads == []
    with pytest.raises(ValueError, match=r"outside 0\.\.7 was given in one of the last 256 calls"):
        op.degrade(x, torch.tensor([2, 2]))
    assert len(reads) == 1
    op.degrade(x, torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="outside 0..7"):
        op.check_pending()
    op.check_pending()  # nothing pending any more


def test_quick_and_full_ask_for_auto_and_get_bf16_only_where_native(monkeypatch):
    from helpers import config, runs

    assert config.PROFILES["quick"].precision == config.PROFILES["full"].precision == "auto"
    assert config.PROFILES["smoke"].precision == "fp32"
    for flags, want in (({"avx2", "avx512f"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")):
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: frozenset(flags))
        got, why = runs.precision_for(config.PROFILES["quick"], "cpu")
        assert got == want, (flags, why)
        assert ("natively" in why) == (want == "bf16")
        # a notebook may still ask for fp32 on any machine
        assert runs.precision_for(config.PROFILES["quick"], "cpu", "fp32")[0] == "fp32"


def test_sampling_batch_is_a_rule_per_device_and_part_of_the_sample_keys(machine):
    from helpers import config, metrics
    from helpers.ddpm import DDPM
    from helpers.training import sample_images

    machine()
    assert hardware.sampling_batch("cpu") == hardware.sampling_batch(torch.device("cpu")) == 64
    assert hardware.sampling_batch("auto") == 64
    machine(cuda=(9, 0))
    assert hardware.sampling_batch("cuda") == hardware.sampling_batch("auto") == 1000
    with pytest.raises(ValueError, match="device='xla' is not allowed"):
        hardware.sampling_batch("xla")
    machine()
    # the batch decides the order of the noise: another batch, other samples, so another key
    torch.manual_seed(0)
    model = DDPM(config.ddpm_preset("default", T=5)).eval()
    a, b = (sample_images(model, 10, seed=3, batch_size=bs) for bs in (10, 4))
    assert not torch.equal(a, b)
    assert torch.equal(a, sample_images(model, 10, seed=3, batch_size=10))
    assert torch.equal(sample_images(model, 10, seed=3), sample_images(model, 10, seed=3, batch_size=64))
    keys = {metrics.epoch_evaluator(16, batch_size=bs)[1] for bs in (16, 64)}
    assert len(keys) == 2  # the batch is in the key
    assert metrics.epoch_evaluator(16, batch_size=16)[1] in keys  # and the same batch gives the same key
    assert metrics.epoch_evaluator(16)[1] == metrics.epoch_evaluator(16, batch_size=64)[1]
