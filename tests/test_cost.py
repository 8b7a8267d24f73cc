"""The cost model (helpers/cost.py): counts checked against hand counts, the full profile's budget,
the time prediction's arithmetic, and clear errors. Pure computation: nothing is trained or sampled."""

import dataclasses
import inspect
import json
import math
from pathlib import Path

import pytest

from helpers import cold, config, cost, models, study

ROOT = Path(__file__).resolve().parents[1]
PFLOP = 1e15

# The full profile as commit 2d85e33 defined it (every 5 epochs, the variants 100 epochs, the EMA at every
# evaluated epoch and on the final 10,000, DDIM on 2,000) with the U-Net restorer in its study.
OLD_FULL = dataclasses.replace(
    config.PROFILES["full"],
    eval_epochs=(1, *range(5, 101, 5)),
    variant_epochs=100,
    ema_eval_epochs=(1, *range(5, 101, 5)),
    ema_final_samples=None,
    ddim_samples=2000,
)
OLD_FULL_RUNS = [
    dataclasses.replace(r, profiles=("smoke", "full")) if r.preset == "columns_unet" else r for r in study.RUNS
]


def run_of(c: cost.StudyCost, kind: str, preset: str) -> cost.RunCost:
    return next(r for r in c.runs if (r.kind, r.preset) == (kind, preset))


# --------------------------------------------------------------------------- counts
def test_smoke_training_steps_by_hand():
    # smoke: the main and short budgets 1 epoch on 1,024 images (8 steps of 128), the five variants 1
    # epoch on 512 (4 steps), every preset at batch 128
    c = cost.count("smoke", "cpu")
    steps = {r.preset: r.steps for r in c.runs}
    assert steps == {
        "default": 8,
        "unet": 8,
        "testing": 8,
        "columns": 8,
        "columns_unet": 8,
        "columns7": 4,
        "rows7": 4,
        "rows28": 4,
        "columns_outside_in": 4,
        "columns_inside_out": 4,
    }
    assert sum(steps.values()) == 60


def test_quick_default_ddpm_sampler_work_by_hand():
    # quick, CPU (sampling batch 64), the default DDPM (T = 1000) and its DDIM sweep in 02:
    # grids at epochs 1, 2, 4 (16 images), evaluation at 1 and 4 (50), 100 final, the explorer's 8,
    # the sweep's 32 timed ancestral images and DDIM S = 10, 20, 50 with eta 0 and 1 on 100
    r = run_of(cost.count("quick", "cpu"), "ddpm", "default")
    T = 1000
    image_steps = 3 * 16 * T + 2 * 50 * T + 100 * T + 8 * T + 32 * T + 2 * 100 * (10 + 20 + 50)
    calls = 3 * T + 2 * 1 * T + 2 * T + 1 * T + 1 * T + 2 * 2 * (10 + 20 + 50)
    assert (r.image_steps, r.sampler_calls) == (image_steps, calls) == (304_000, 9_320)
    assert r.steps == 4 * 469


def test_full_counts_at_the_gpu_sampling_batch():
    c = cost.count("full", "cuda")
    r = run_of(c, "ddpm", "default")
    # per-epoch: 11 raw evaluations and 2 EMA ones of 1,000 images, one batch of 1,000 each
    per_epoch = [w for w in r.work if w.what.startswith("per-epoch") and w.unit == "sample"]
    assert sum(w.calls for w in per_epoch) == (11 + 2) * 1000
    assert {w.batch for w in per_epoch} == {1000}
    # final: 10,000 raw (10 batches x T), the EMA's 1,000; Inception on 10,000 raw, 1,000 EMA, 1,000 raw again
    finals = [w for w in r.work if w.what.startswith("final samples")]
    assert sum(w.calls for w in finals if w.unit == "sample") == 10 * 1000 + 1 * 1000
    assert r.inception_images == 10_000 + 1_000 + 1_000


def test_cold_sampling_counts_T_restorer_calls_and_reconstructions_2T_plus_1():
    c = cost.count("full", "cuda")
    r = run_of(c, "cold", "columns")
    final = [w for w in r.work if w.what == "final samples" and w.unit == "sample"]
    assert sum(w.images for w in final) == 10_000 * 28
    recon = [w for w in r.work if w.what == "reconstructions" and w.unit == "sample"]
    assert sum(w.images for w in recon) == 10_000 * (2 * 28 + 1)
    assert sum(w.calls for w in recon) == 10 * (2 * 28 + 1)  # cold.reconstructions batches of 1,000


def test_forward_flops_are_models_describe():
    for kind, preset in (("ddpm", "default"), ("ddpm", "unet"), ("cold", "columns")):
        cfg = config.KIND_PRESETS[kind][preset]
        assert cost.network_mflops(cfg) == models.describe(models.network(cfg))["mflops_per_image"]
    r = run_of(cost.count("quick", "cpu"), "ddpm", "default")
    train = next(w for w in r.work if w.what == "training")
    assert train.images == 4 * 60_000
    assert train.flops == pytest.approx(
        4 * 60_000 * 3 * models.describe(models.network(config.DDPM_PRESETS["default"]))["mflops_per_image"] * 1e6
    )
    assert cost.network_mflops(config.DDPM_PRESETS["default"]) == pytest.approx(158.9, abs=0.05)


def test_inception_constant_matches_a_flop_count_of_the_architecture():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        counter = FlopCounterMode(display=False)
        with counter:
            net(torch.zeros(1, 3, 299, 299))
    without_fc = counter.get_total_flops() - 2 * 2048 * 1000  # the FID network has no classifier layer
    assert without_fc / 1e9 == pytest.approx(cost.INCEPTION_GFLOP, abs=0.01)


@pytest.mark.parametrize("profile", list(config.PROFILES))
def test_every_study_run_of_a_profile_appears(profile):
    c = cost.count(profile, "cpu")
    assert [r.label for r in c.runs] == [f"{r.kind} {r.preset}" for r in study.runs(profile)]
    assert {r.notebook for r in c.runs} <= set(c.notebooks)
    assert math.isclose(sum(c.by_notebook().values()), c.flops)
    assert all(w.flops > 0 and w.images > 0 and w.calls > 0 for w in c.work)


def test_mirrored_constants_match_the_code():
    assert inspect.signature(cold.reconstructions).parameters["batch_size"].default == cost.RECON_BATCH
    # the extra views: notebook 02 sweeps DDIM and compares the EMA on its baseline, the default DDPM
    nb = json.loads((ROOT / "notebooks" / f"{cost.EXTRA_VIEWS_NOTEBOOK}.ipynb").read_text())
    src = "\n".join("".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code")
    assert "study.ddim_sweep(runs[baseline])" in src and "study.ema_finals(runs[baseline])" in src
    assert f'baseline = "{cost.EXTRA_VIEWS_RUN[1]}"' in src
    entry = study.study_run(*cost.EXTRA_VIEWS_RUN)
    assert entry.ema


# --------------------------------------------------------------------------- the full profile's budget
def test_full_is_at_most_20_pflop_and_keeps_the_protocol():
    full = config.PROFILES["full"]
    assert cost.count("full").flops <= 20 * PFLOP
    assert full.epochs == 100 and full.variant_epochs == 20 and full.variant_train_limit is None
    assert full.sample_epochs == (1, 20, 40, 60, 100)
    assert len(full.eval_epochs) >= 10 and {1, 100} <= set(full.eval_epochs) and full.eval_samples == 1000
    assert full.final_samples == full.inception_samples == 10_000
    assert full.ema_eval_epochs and len(full.ema_eval_epochs) < len(full.eval_epochs)
    assert full.ema_final_samples < full.final_samples and full.ddim_samples <= full.final_samples


def test_old_full_definition_is_about_39_pflop():
    old = cost.count(OLD_FULL, "cuda", OLD_FULL_RUNS)
    assert old.flops == pytest.approx(39 * PFLOP, rel=0.15)
    assert sum(r.steps for r in old.runs) == 469_000  # 10 runs x 100 epochs x 469
    # the 130,000 Inception images, plus what the engine now does for the DDIM sweep's ancestral
    # row: it scores the final sample's first 2,000 images (Inception included) against a 2,000-image
    # test reference instead of drawing 2,000 images anew
    assert sum(w.images for w in old.work if w.net == "inception") == 130_000 + 2 * 2_000


def test_quick_and_smoke_new_fields_keep_todays_behaviour():
    smoke, quick = config.PROFILES["smoke"], config.PROFILES["quick"]
    assert smoke.ema_eval_epochs == smoke.eval_epochs  # the engine scores the EMA at every eval epoch
    assert (smoke.ema_final_samples or smoke.final_samples) == smoke.final_samples
    assert quick.ema_decay is None and quick.ema_eval_epochs == ()
    assert smoke.ddim_samples == smoke.final_samples and quick.ddim_samples == quick.final_samples


# --------------------------------------------------------------------------- time
def test_predict_scales_linearly_with_the_rates():
    rates = cost.stated_rates("cpu-epyc-bf16")
    t1 = cost.predict("quick", rates).seconds
    t2 = cost.predict("quick", {**rates, **{k: 2 * rates[k] for k in cost.RATE_KEYS}}).seconds
    assert t2 == pytest.approx(t1 / 2)
    # one rate alone: training time of the CNN at half the rate doubles, the rest is unchanged
    p1 = cost.predict("quick", rates).by_what()
    p2 = cost.predict("quick", {**rates, "train/cnn": rates["train/cnn"] / 2})
    assert sum(s for w, s in p2.items if w.rate_key == "train/cnn") == pytest.approx(
        2 * sum(s for w, s in cost.predict("quick", rates).items if w.rate_key == "train/cnn")
    )
    assert p2.by_what()["reconstructions"] == pytest.approx(p1["reconstructions"])


def test_predict_by_hand_for_one_item():
    rates = cost.stated_rates("cpu-epyc-bf16")
    p = cost.predict("quick", rates)
    train = next((w, s) for w, s in p.items if w.run == "ddpm default" and w.what == "training")
    assert train[1] == pytest.approx(4 * 60_000 / 718)
    assert p.seconds == pytest.approx(sum(p.by_notebook().values()))


def test_floors_bound_small_calls_from_below():
    rates = {**cost.stated_rates("h200-assumed"), "call_floor_s": 1.0}
    p = cost.predict("smoke", rates)
    grids = [(w, s) for w, s in p.items if w.what == "sample grids"]
    assert all(s == pytest.approx(w.calls * 1.0) for w, s in grids)


def test_quick_prediction_agrees_with_the_measured_run_within_the_stated_factor():
    # docs/quick.md: ./run_all.sh --profile quick on the AMD EPYC, bf16, commit ffe155e (seconds per notebook)
    measured = {"01_ddpm": 581, "02_hyperparams": 182, "03_cold_diffusion": 191, "04_comparison": 193}
    predicted = cost.predict("quick", "cpu-epyc-bf16").by_notebook()
    for nb, seconds in measured.items():
        assert 1.0 <= seconds / predicted[nb] <= 1.7, nb
    assert 1.0 <= sum(measured.values()) / sum(predicted.values()) <= 1.5


def test_stated_rate_sets_carry_a_source_and_the_h200_one_says_it_is_assumed():
    for name in cost.RATE_SETS:
        r = cost.stated_rates(name)
        assert cost.check_rates(r) and r["source"]
    assert "ASSUMED" in cost.stated_rates("h200-assumed")["source"]


def test_rates_from_gpu_check_measurements():
    measured = {"ddpm_train": 128 / 50_000, "ddpm_sample_500": 1000 / 200_000}
    r = cost.rates_from_gpu_check(measured, 1 / 5000)
    assert r["train/cnn"] == pytest.approx(50_000) and r["sample/cnn"] == pytest.approx(200_000)
    assert r["inception"] == pytest.approx(5000) and "derived" in r["source"]
    assert cost.predict("full", r).seconds > 0


# --------------------------------------------------------------------------- errors
def test_bad_profile_name_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"profile='huge' is not allowed; expected one of"):
        cost.count("huge")
    with pytest.raises(ValueError, match=r"profile='huge'"):
        cost.predict("huge", "cpu-epyc-bf16")


def test_missing_or_bad_rate_is_refused_naming_it(tmp_path):
    rates = cost.stated_rates("cpu-epyc-bf16")
    del rates["sample/unet"]
    with pytest.raises(ValueError, match=r"rates: missing 'sample/unet'"):
        cost.predict("quick", rates)
    with pytest.raises(ValueError, match=r"rates\['inception'\]=0"):
        cost.predict("quick", {**cost.stated_rates("cpu-epyc-bf16"), "inception": 0})
    with pytest.raises(ValueError, match=r"rates='gpu-fast' is not allowed"):
        cost.predict("quick", "gpu-fast")
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({k: 1.0 for k in cost.RATE_KEYS if k != "classifier"}))
    with pytest.raises(ValueError, match=r"missing 'classifier'"):
        cost.load_rates(str(path))


def test_command_prints_the_tables(capsys, tmp_path):
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({**cost.stated_rates("cpu-epyc-fp32"), "source": "a test"}))
    assert cost.main(["--profile", "smoke", "--rates", "cpu-epyc-bf16", "--rates", str(path)]) == 0
    out = capsys.readouterr().out
    for r in study.runs("smoke"):
        assert f"| {r.kind} {r.preset} | {r.notebook} |" in out
    assert "time, cpu-epyc-bf16" in out and "time, measured" in out and "Total:" in out
    with pytest.raises(SystemExit):
        cost.main(["--profile", "smoke", "--rates", "nowhere.json"])
    assert "rates='nowhere.json' is not allowed" in capsys.readouterr().err
