"""Defects of the sampling and caching around a run, each shown where a CPU can show it: the EMA's
copy made every epoch, the DDIM sweep drawing again what the final sample holds, grids and
reconstructions in another precision than the run's other samples, and reference features cached
without the device and precision that computed them."""

import copy
import dataclasses

import pytest
import torch

from helpers import analyses, cold, hardware, metrics, runs, training
from helpers.training import TrainSettings


def test_the_ema_copy_is_made_only_where_it_is_scored(train_tiny, monkeypatch):
    copies = []
    real = copy.deepcopy

    def counting(obj, *a, **k):
        if isinstance(obj, torch.nn.Module):
            copies.append(type(obj).__name__)
        return real(obj, *a, **k)

    monkeypatch.setattr(training.copy, "deepcopy", counting)
    run = train_tiny(TrainSettings(epochs=3, ema_decay=0.9))  # nothing scored during training
    assert run.ema_model is not None
    assert len(copies) == 1  # the run handed out at the end; before: one per epoch as well


def test_the_ema_is_scored_only_at_its_epochs(train_tiny):
    seen = []

    def evaluate(model, epoch):
        seen.append(epoch)
        return {"fid": float(epoch)}

    s = TrainSettings(epochs=3, ema_decay=0.9, eval_epochs=(1, 2, 3), eval_key="t", ema_eval_epochs=(2,))
    run = train_tiny(s, evaluate=evaluate)
    assert sorted(run.metrics) == [1, 2, 3] and sorted(run.metrics_ema) == [2]
    assert seen == [1, 2, 2, 3]
    with pytest.raises(ValueError, match=r"ema_eval_epochs=\(4,\) is not allowed; expected epochs among"):
        TrainSettings(epochs=3, eval_epochs=(1,), ema_eval_epochs=(4,))
    assert analyses.ema_comparison(run)["per_epoch"].keys() == {2}


def test_the_ddim_sweep_takes_its_ancestral_row_from_the_final_sample(train_tiny, tiny_profile, monkeypatch, mnist_dir):
    prof = dataclasses.replace(tiny_profile, final_samples=60, ddim_samples=40, ema_final_samples=40)
    run = train_tiny(TrainSettings(epochs=1, ema_decay=0.9))
    assert runs.final_subsets(run, prof) == (40,)
    final = runs.final_metrics(run, prof, progress=False)
    assert final["n"] == 60 and final["subsets"][40]["n"] == 40
    drawn = []
    real = analyses.sample_images

    def recording(model, n, *a, **kw):
        drawn.append((kw.get("sampler", "prince"), n))
        return real(model, n, *a, **kw)

    monkeypatch.setattr(analyses, "sample_images", recording)
    sweep = analyses.ddim_sweep(run, prof, progress=False)
    prince = [n for sampler, n in drawn if sampler == "prince"]
    assert prince == [runs.PROTOCOL.timing_samples]  # timed only; before: all 40 drawn again
    row = sweep["rows"][0]
    assert row["n"] == 40 and row["fid_classifier"] == final["subsets"][40]["fid_classifier"]
    # the EMA's final numbers sit beside the raw model's on the same images' count
    both = {"raw": runs.on_first(final, 40), "ema": runs.final_metrics(run, prof, progress=False, use_ema=True)}
    assert both["raw"]["n"] == both["ema"]["n"] == 40


def test_grids_are_drawn_in_the_runs_precision(train_tiny):
    s = TrainSettings(epochs=1, sample_epochs=(1,), n_grid=3, precision="bf16")
    run = train_tiny(s)
    model = run.model
    in_bf16 = training.sample_images(model, 3, 1, batch_size=3, precision="bf16")
    in_fp32 = training.sample_images(model, 3, 1, batch_size=3, precision="fp32")
    assert not torch.equal(in_bf16, in_fp32)
    # the grid is the last epoch's: drawn after that epoch's steps, from the weights handed out
    assert torch.equal(run.samples[1], in_bf16)


def test_reconstructions_follow_the_runs_precision(train_tiny, tiny_profile, monkeypatch, mnist_dir, tiny_cold_config):
    from helpers.cold import ColdDiffusion

    run = train_tiny(TrainSettings(epochs=1, precision="bf16"), kind=runs.KINDS["cold"], cfg=tiny_cold_config)
    assert isinstance(run.model, ColdDiffusion)
    dtypes = []
    real = cold.reconstructions

    def recording(model, x, *a, **kw):
        dtypes.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real(model, x, *a, **kw)

    monkeypatch.setattr(cold, "reconstructions", recording)
    runs.reconstruction_metrics(run, tiny_profile)
    analyses.cold_examples(run, n=2)
    assert dtypes == [torch.bfloat16, torch.bfloat16]


def test_reference_features_are_keyed_by_the_device_and_matmul_precision(tmp_path, monkeypatch, mnist_dir):
    first = metrics.reference_features("classifier", "test", 16, "cpu", folder=tmp_path, log=lambda *_: None)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")  # as TF32 on a GPU
    metrics._MEMORY.clear()
    metrics.reference_features("classifier", "test", 16, "cpu", folder=tmp_path, log=lambda *_: None)
    files = sorted(p.name for p in tmp_path.glob("classifier-test-n16-*.pt"))
    assert len(files) == 2 and first.features.shape == (16, first.features.shape[1])
    assert hardware.pick_device("cpu").type == "cpu"
