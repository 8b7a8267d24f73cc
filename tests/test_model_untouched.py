"""No helper a notebook calls with a trained model may move it, change its dtype or switch its mode for
good: the notebooks hand the same `run.model` to one helper after another (on a GPU, a schedule moved
to the CPU by one of them breaks the next one's sampler).

Every `nn.Module.to/.cpu/.cuda/.half/.float/.double` goes through `nn.Module._apply`, and `eval()`
through `train(False)`: both are spied on for every module of the trained models while each
notebook-level function runs, and the tensors themselves (storage, dtype, device, values) are
compared before and after."""

import contextlib

import pytest
import torch
from torch import nn

from helpers import analyses, cold, explore, metrics
from helpers import runs as study_runs
from helpers.ema import EMA
from helpers.training import TrainSettings, sample_images


def images(n, seed=0):
    return torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed)) - 0.5


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_tiny_in, tiny_cold_config):
    """A trained tiny DDPM (with an EMA) and a trained tiny cold-diffusion model, as the engine hands
    them out."""
    folder = tmp_path_factory.mktemp("runs")
    ddpm = train_tiny_in(folder, TrainSettings(epochs=1, ema_decay=0.9))
    cold_run = train_tiny_in(folder, TrainSettings(epochs=1), kind=study_runs.KINDS["cold"], cfg=tiny_cold_config)
    return {"ddpm": ddpm, "cold": cold_run}


def snapshot(model: nn.Module) -> dict:
    out = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        out[name] = (t.data_ptr(), t.dtype, t.device, t.requires_grad, t.detach().clone())
    out["training"] = [m.training for m in model.modules()]
    return out


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    assert before.pop("training") == after.pop("training")
    for name, (ptr, dtype, device, grad, value) in before.items():
        ptr2, dtype2, device2, grad2, value2 = after[name]
        assert (ptr2, dtype2, device2, grad2) == (ptr, dtype, device, grad), name
        assert torch.equal(value2, value), name


@contextlib.contextmanager
def untouched(monkeypatch, *models):
    """Fail if anything calls _apply or train() on a module of `models`, or changes their tensors."""
    watched = {id(m) for model in models for m in model.modules()}
    calls = []
    original_apply, original_train = nn.Module._apply, nn.Module.train

    def spy_apply(self, fn, *args, **kwargs):
        if id(self) in watched:
            calls.append(f"_apply on {type(self).__name__}")
        return original_apply(self, fn, *args, **kwargs)

    def spy_train(self, mode=True):
        if id(self) in watched:
            calls.append(f"train({mode}) on {type(self).__name__}")
        return original_train(self, mode)

    before = [snapshot(m) for m in models]
    with monkeypatch.context() as mp:
        mp.setattr(nn.Module, "_apply", spy_apply)
        mp.setattr(nn.Module, "train", spy_train)
        yield calls
    assert calls == []
    for b, m in zip(before, models):
        assert_same(b, snapshot(m))


def test_the_spy_sees_what_moves_or_switches_a_model(monkeypatch, runs):
    model = runs["ddpm"].model
    for act in (
        lambda: model.noising.cpu(),  # the explorer's old defect (in place, even if already there)
        lambda: model.eval(),
        lambda: model.to(torch.float32),
    ):  # no-ops here, still caught
        with pytest.raises(AssertionError), untouched(monkeypatch, model):
            act()
    # a change that bypasses _apply shows in the tensors
    with pytest.raises(AssertionError), untouched(monkeypatch, model):
        model.noising.beta = model.noising.beta.clone()
    assert all(not m.training for m in model.modules())


def test_explorers_leave_the_model_alone(monkeypatch, runs, mnist_dir):
    ddpm, cold_model = runs["ddpm"].model, runs["cold"].model
    with untouched(monkeypatch, ddpm):
        e = explore.DDPMExplorer(images(4), ddpm, seed=1)
        e.frame(3)
        e.widget()
        e.figure(steps=3)
    assert e.noising is not ddpm.noising and e.noising.beta.device.type == "cpu"
    with untouched(monkeypatch, cold_model):
        d = explore.DegradationExplorer(
            images(4), lambda cfg: cold_model if cfg == cold_model.cfg else None, base=cold_model.cfg
        )
        d.frame("columns", 1, "random", 5)
        d.figure(steps=3)
        d.widget()
        explore.degradation_frame(images(2), cold_model.cfg, 4, cold_model)


def test_an_explorer_given_a_model_in_training_mode_samples_from_an_eval_copy(monkeypatch, runs):
    model = runs["ddpm"].model
    model.train()
    try:
        with untouched(monkeypatch, model):
            e = explore.DDPMExplorer(images(2), model, seed=1)
        assert model.training and e.trajectory is not None
    finally:
        model.eval()


def test_sampling_and_scoring_helpers_leave_the_model_alone(monkeypatch, runs, mnist_dir, tiny_profile):
    ddpm, cold_run = runs["ddpm"], runs["cold"]
    prof = tiny_profile
    with untouched(monkeypatch, ddpm.model, ddpm.ema_model, cold_run.model):
        sample_images(ddpm.model, 6, batch_size=4)
        evaluate, _ = metrics.epoch_evaluator(10, batch_size=5)
        evaluate(ddpm.model, 1)
        evaluate(cold_run.model, 1)
        study_runs.final_metrics(ddpm, prof, progress=False)
        study_runs.final_metrics(ddpm, prof, progress=False, use_ema=True)
        analyses.ddim_sweep(ddpm, prof, progress=False)
        study_runs.final_metrics(cold_run, prof, progress=False)
        cold.reconstructions(cold_run.model, images(3))
        analyses.cold_examples(cold_run, n=3)
        study_runs.reconstruction_metrics(cold_run, prof)


def test_ema_evaluation_moves_and_switches_nothing(monkeypatch, runs):
    model = runs["ddpm"].model
    ema = EMA(model, 0.9)
    with untouched(monkeypatch, model):
        ema.update(model)
        with ema.applied(model):
            model.sample(2, generator=torch.Generator().manual_seed(0))
        ema.state_dict()
