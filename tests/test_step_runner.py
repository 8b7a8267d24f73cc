"""The engine's step with static buffers (training.StepRunner): what a CPU can verify of the CUDA-graph
path. A stand-in graph captures the step function and replays it; the buffers must keep their storage,
the step must not synchronise with the host, and its losses must be the eager step's."""

import pytest
import torch

from helpers import config, hardware
from helpers.ddpm import DDPM
from helpers.ema import EMA
from helpers.training import StepRunner, adam, train_step

CFG = config.DDPMConfig(T=20, hidden=(4, 8), batch_size=16, lr=2e-3)


class ReplayGraph:
    """Stands in for torch.cuda.CUDAGraph: `capture` keeps the step function and a static output, each
    `replay` runs the function and writes its result into that output (as a graph refills its
    buffers)."""

    def __init__(self):
        self.fn, self.out, self.replays = None, None, 0

    def capture(self, fn):
        self.fn, self.out = fn, torch.empty(())
        return self.out

    def replay(self):
        self.replays += 1
        self.out.copy_(self.fn())


def _setup(ema: bool):
    torch.manual_seed(0)
    model = DDPM(CFG).train()
    opt = adam(model, CFG.lr, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    avg = EMA(model, 0.99) if ema else None
    return model, opt, gen, avg


def _batches(n=50, bs=16):
    g = torch.Generator().manual_seed(2)
    return [torch.rand(bs, 1, 28, 28, generator=g) - 0.5 for _ in range(n)]


def _eager_losses(ema=False):
    model, opt, gen, avg = _setup(ema)
    ac, scaler = hardware.autocast("cpu", "fp32"), hardware.grad_scaler("cpu", "fp32")
    losses = [train_step(model, opt, x, gen, ac, scaler, avg).clone() for x in _batches()]
    return losses, model, avg


def _replayed(ema=False):
    model, opt, gen, avg = _setup(ema)
    ac, scaler = hardware.autocast("cpu", "fp32"), hardware.grad_scaler("cpu", "fp32")
    graph = ReplayGraph()
    runner = StepRunner(model, opt, gen, ac, scaler, avg, 16, torch.device("cpu"), "fp32", print, lambda: graph)
    losses, pointers = [], set()
    for x in _batches():
        losses.append(runner(x).clone())
        pointers.add((runner.x.data_ptr(), runner.loss.data_ptr() if runner.graph else None))
    return losses, model, avg, runner, graph, pointers


def test_replayed_steps_give_the_eager_losses_and_weights_bit_for_bit():
    eager, m1, _ = _eager_losses()
    replayed, m2, _, runner, graph, _ = _replayed()
    assert graph.replays == 50 - StepRunner.WARMUP  # the warm-up steps ran eagerly, the rest replayed
    assert all(torch.equal(a, b) for a, b in zip(eager, replayed))
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_the_step_keeps_its_buffers_storage_across_steps():
    *_, runner, graph, pointers = _replayed()
    replay_pointers = {p for p in pointers if p[1] is not None}
    assert len(replay_pointers) == 1  # one input buffer and one loss buffer, reused by every replay
    assert len({p[0] for p in pointers}) == 1


def test_the_ema_on_the_device_follows_the_host_average():
    _, _, ema_eager = _eager_losses(ema=True)
    _, _, ema_graph, runner, _, _ = _replayed(ema=True)
    assert ema_graph.updates == ema_eager.updates == 50 and int(runner.ema_n) == 50
    for k in ema_eager.shadow:  # the same decays; the device form rounds differently
        assert torch.allclose(ema_eager.shadow[k], ema_graph.shadow[k], atol=1e-6), k


def test_a_batch_of_another_size_runs_eagerly_and_keeps_the_counters(monkeypatch):
    model, opt, gen, avg = _setup(ema=True)
    ac, scaler = hardware.autocast("cpu", "fp32"), hardware.grad_scaler("cpu", "fp32")
    graph = ReplayGraph()
    runner = StepRunner(model, opt, gen, ac, scaler, avg, 16, torch.device("cpu"), "fp32", print, lambda: graph)
    for x in _batches(5):
        runner(x)
    runner(_batches(1, bs=7)[0])  # an epoch's last, smaller batch
    assert graph.replays == 5 - StepRunner.WARMUP and avg.updates == 6 and int(runner.ema_n) == 6


def test_no_host_synchronisation_inside_the_captured_step(monkeypatch):
    # Adam on the CPU reads its step count on the host; on CUDA the engine's Adam keeps it on the
    # device (`capturable`, checked below), so this check steps with SGD, which reads nothing back.
    assert adam(torch.nn.Linear(2, 2), 1e-3, torch.device("cuda")).defaults["capturable"] is True
    model, _, gen, avg = _setup(ema=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ac, scaler = hardware.autocast("cpu", "fp32"), hardware.grad_scaler("cpu", "fp32")
    graph = ReplayGraph()
    runner = StepRunner(model, opt, gen, ac, scaler, avg, 16, torch.device("cpu"), "fp32", print, lambda: graph)
    batches = _batches(6)
    for x in batches[: StepRunner.WARMUP + 1]:
        runner(x)

    def sync(*_a, **_k):
        raise AssertionError("host synchronisation inside the step")

    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    for x in batches[StepRunner.WARMUP + 1 :]:
        runner(x)  # copies into the buffer and replays: nothing reads a device value back
    monkeypatch.undo()
    assert graph.replays == 6 - StepRunner.WARMUP


def test_the_cpu_never_captures_and_fp16_never_does():
    model, opt, gen, _ = _setup(False)
    ac, scaler = hardware.autocast("cpu", "fp32"), hardware.grad_scaler("cpu", "fp32")
    cpu = StepRunner(model, opt, gen, ac, scaler, None, 16, torch.device("cpu"), "fp32", print)
    assert not cpu.capture and "eager" in cpu.reason
    fp16 = StepRunner(model, opt, gen, ac, scaler, None, 16, torch.device("cuda"), "fp16", print)
    assert not fp16.capture


def test_a_failing_capture_falls_back_to_eager_steps_and_says_why():
    model, opt, gen, _ = _setup(False)
    ac, scaler = hardware.autocast("cpu", "fp32"), hardware.grad_scaler("cpu", "fp32")

    class Broken(ReplayGraph):
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    said = []
    runner = StepRunner(model, opt, gen, ac, scaler, None, 16, torch.device("cpu"), "fp32", said.append, Broken)
    eager, *_ = _eager_losses()
    losses = [runner(x).clone() for x in _batches()]
    assert not runner.capture and "capture failed (RuntimeError" in runner.reason and said
    # the warm-up steps already ran on the buffers; the later ones eagerly: the same losses all along
    assert all(torch.equal(a, b) for a, b in zip(eager, losses))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_graph_gives_the_eager_losses_to_rounding():
    dev = torch.device("cuda")
    out = []
    for capture in (False, True):
        torch.manual_seed(0)
        model = DDPM(CFG).to(dev).train()
        opt = adam(model, CFG.lr, dev)
        gen = torch.Generator(device=dev).manual_seed(1)
        ac, scaler = hardware.autocast("cuda", "fp32"), hardware.grad_scaler("cuda", "fp32")
        runner = StepRunner(model, opt, gen, ac, scaler, None, 16, dev, "fp32", print)
        runner.capture = capture
        out.append(torch.stack([runner(x.to(dev)).clone() for x in _batches()]).cpu())
    assert torch.allclose(out[0], out[1], rtol=1e-3, atol=1e-4)
