"""EMA of model weights: the closed-form average, warm-up, exact save/resume and exact swapping."""

import io

import pytest
import torch
from torch import nn

from helpers.ema import EMA


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


def trajectory(model, k, seed=1):
    """k new weight vectors, as if an optimiser had stepped k times (BatchNorm stats move too)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        out.append({k: v.clone() for k, v in model.state_dict().items()})
    return out


def test_ema_without_warmup_is_the_closed_form_average():
    model, decay, k = tiny_model(), 0.9, 7
    w0 = {n: v.clone() for n, v in model.state_dict().items()}
    ema = EMA(model, decay, warmup=False)
    states = trajectory(model, k)
    for w in states:
        model.load_state_dict(w)
        ema.update(model)
    for name, _ in model.named_parameters():
        closed = decay**k * w0[name] + sum(
            (1 - decay) * decay ** (k - i) * states[i - 1][name] for i in range(1, k + 1)
        )
        assert torch.allclose(ema.shadow[name], closed, rtol=0, atol=1e-12)
        assert not torch.allclose(ema.shadow[name], states[-1][name])
    # buffers are copied, not averaged
    assert torch.equal(ema.shadow["1.running_mean"], states[-1]["1.running_mean"])
    assert ema.shadow["1.num_batches_tracked"].item() == k


def test_warmup_uses_min_of_decay_and_1_plus_n_over_10_plus_n():
    model, decay, k = tiny_model(), 0.5, 12
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema = EMA(model, decay)
    ds = [min(decay, (1 + n) / (10 + n)) for n in range(k)]
    assert ds[0] == 0.1 and ds[-1] == 0.5  # the warm-up ends once (1 + n) / (10 + n) passes decay
    states = trajectory(model, k)
    for n, w in enumerate(states):
        assert ema.current_decay() == ds[n]
        model.load_state_dict(w)
        ema.update(model)
    for name in w0:
        closed = torch.zeros_like(w0[name])
        weights = [w0[name]] + [s[name] for s in states]
        for i, w in enumerate(weights):  # weight of w_i: (1 - d_{i-1}) prod_{j >= i} d_j, with 1 for w_0
            coef = 1.0 if i == 0 else 1 - ds[i - 1]
            for j in range(i, k):
                coef *= ds[j]
            closed += coef * w
        assert torch.allclose(ema.shadow[name], closed, rtol=0, atol=1e-12)


def test_state_dict_round_trip_resumes_bit_for_bit():
    model = tiny_model()
    states = trajectory(model, 10)
    model.load_state_dict(tiny_model().state_dict())

    straight = EMA(model, 0.95)
    for w in states:
        model.load_state_dict(w)
        straight.update(model)

    first = EMA(tiny_model(), 0.95)
    for w in states[:4]:
        model.load_state_dict(w)
        first.update(model)
    buf = io.BytesIO()
    torch.save({"ema": first.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)["ema"]
    resumed = EMA(tiny_model(seed=5), 0.95)  # different weights: everything must come from the state
    resumed.load_state_dict(saved)
    assert resumed.updates == 4
    for w in states[4:]:
        model.load_state_dict(w)
        resumed.update(model)
    assert straight.shadow.keys() == resumed.shadow.keys()
    for name in straight.shadow:
        assert torch.equal(straight.shadow[name], resumed.shadow[name])


def test_load_state_dict_refuses_another_decay_or_model():
    model = tiny_model()
    state = EMA(model, 0.9).state_dict()
    with pytest.raises(ValueError, match="ema_decay=0.9 .*expected ema_decay=0.99"):
        EMA(model, 0.99).load_state_dict(state)
    with pytest.raises(ValueError, match="parameters"):
        EMA(nn.Linear(3, 4).double(), 0.9).load_state_dict(state)


def test_applied_swaps_in_the_average_and_restores_raw_weights_exactly():
    model = tiny_model()
    ema = EMA(model, 0.8, warmup=False)
    trajectory(model, 3)
    ema.update(model)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 3, dtype=torch.float64)
    model.eval()
    with ema.applied(model) as m:
        assert m is model
        for k, v in model.state_dict().items():
            assert torch.equal(v, ema.shadow[k])
        averaged_out = model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k])
    assert not torch.allclose(model(x), averaged_out)
    # restored even when the block fails
    with pytest.raises(RuntimeError), ema.applied(model):
        raise RuntimeError("evaluation failed")
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k])
    # copy_to leaves the average in place
    ema.copy_to(model)
    assert torch.equal(model[0].weight, ema.shadow["0.weight"])


@pytest.mark.parametrize("decay", [0, 0.0, 1, 1.0, -1, 1.5, float("nan"), True])
def test_decay_outside_0_1_is_refused_naming_ema_decay(decay):
    with pytest.raises(ValueError, match=r"ema_decay=.* expected a finite number > 0.0 and < 1.0"):
        EMA(tiny_model(), decay)


def test_engine_resume_mid_run_gives_the_ema_of_an_uninterrupted_run(train_tiny, tmp_path):
    from helpers.training import TrainSettings

    s = TrainSettings(epochs=3, ema_decay=0.95)

    def run(folder, **kw):
        return train_tiny(s, runs_dir=folder, **kw)

    full = run(tmp_path / "a")

    def stop(epoch, step):
        if (epoch, step) == (2, 2):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", on_step=stop)
    resumed = run(tmp_path / "b")
    assert not resumed.cached and full.ema_model is not None
    for k, v in full.ema_model.state_dict().items():
        assert torch.equal(v, resumed.ema_model.state_dict()[k]), k
    assert not all(torch.equal(v, full.model.state_dict()[k]) for k, v in full.ema_model.state_dict().items())


def test_foreach_update_gives_the_bits_of_the_per_tensor_formula():
    """The update runs as two foreach calls; on the CPU in fp32 it must equal, bit for bit, the
    per-tensor shadow.mul_(d).add_(param, alpha=1 - d) it replaced (the study's CPU runs are exact)."""
    from helpers.config import DDPMConfig
    from helpers.ddpm import DDPM

    torch.manual_seed(0)
    model = DDPM(DDPMConfig(T=20, hidden=(8, 16, 8)))
    ema = EMA(model, 0.999)
    old = {k: v.detach().clone() for k, v in model.state_dict().items()}
    averaged = {n for n, p in model.named_parameters() if p.is_floating_point()}
    gen = torch.Generator().manual_seed(3)
    for _ in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
        d = ema.current_decay()
        for k, v in model.state_dict().items():
            if k in averaged:
                old[k].mul_(d).add_(v, alpha=1 - d)
            else:
                old[k].copy_(v)
        ema.update(model)
    assert ema.updates == 25
    for k in old:
        assert old[k].dtype == torch.float32 and torch.equal(ema.shadow[k], old[k]), k
