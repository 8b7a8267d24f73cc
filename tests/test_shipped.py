"""Runs trained elsewhere: a finished checkpoint written on another device, and the final weights
shipped for a profile too long to train here (helpers/shipped.py), taken into the cache on first use."""

import io
import json
import tarfile

import pytest
import torch

from helpers import config, hardware, runs, shipped, store, study, training
from helpers.training import TrainingStopped, TrainSettings

# --------------------------------------------------------------------------- checkpoints from elsewhere


def _rewrite(ckpt, change):
    payload = store.load_tensors(ckpt)
    change(payload)
    store.save_tensors(ckpt, payload)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_finished_run_loads_without_optimiser_state_or_its_devices_generator(train_tiny, tmp_path):
    s = TrainSettings(epochs=1, ema_decay=0.9)
    run = train_tiny(s)
    (ckpt,) = training.checkpoints(run.dir)
    saved_rng = store.load_tensors(ckpt)["rng"]["torch"]

    def as_from_a_gpu(payload):
        del payload["optim"]
        payload["rng"]["train"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
        payload["logs"]["device"] = "cuda:0"

    _rewrite(ckpt, as_from_a_gpu)
    with pytest.raises(RuntimeError):  # what the engine used to do with that state on this device
        torch.Generator().set_state(torch.zeros(16, dtype=torch.uint8))
    again = train_tiny(s)
    assert again.cached and _same_weights(again.model, run.model) and _same_weights(again.ema_model, run.ema_model)
    assert torch.equal(torch.get_rng_state(), saved_rng)  # the global generator as the run left it
    assert again.sampling_batch == hardware.SAMPLING_BATCH["cuda"] != training.sampling_batch_size(again.model)


def test_an_unfinished_checkpoint_without_optimiser_state_is_not_resumed(train_tiny, tmp_path):
    s = TrainSettings(epochs=2)
    whole = train_tiny(s, runs_dir=tmp_path / "whole")
    with pytest.raises(TrainingStopped):
        train_tiny(s, runs_dir=tmp_path / "cut", deadline=0.0)
    (ckpt,) = training.checkpoints(next((tmp_path / "cut").iterdir()))
    _rewrite(ckpt, lambda p: p.pop("optim"))
    said = []
    again = train_tiny(s, runs_dir=tmp_path / "cut", log=said.append)
    assert any("ignoring checkpoint ckpt-0001.pt" in m and "'optim'" in m for m in said), said
    assert not again.cached and _same_weights(again.model, whole.model)  # trained again from the start


def test_a_run_samples_in_the_batch_of_the_device_it_was_trained_on(train_tiny):
    run = train_tiny()
    assert run.logs["device"] == "cpu" and run.sampling_batch == hardware.SAMPLING_BATCH["cpu"]


# --------------------------------------------------------------------------- shipped runs
PROFILE = config.Profile(
    "shiptest",
    epochs=1,
    train_limit=64,
    sample_epochs=(),
    eval_epochs=(),
    eval_samples=10,
    final_samples=20,
    inception_samples=0,
    variant_epochs=1,
    variant_train_limit=64,
    ema_decay=0.9,
    ddim_steps=(5,),
    ddim_samples=20,
    short_epochs=1,
    precision="fp32",
)


@pytest.fixture(scope="module")
def shipped_runs(tmp_path_factory, mnist_dir):
    """The profile's two shipped runs trained once (fp32, one step each), the DDPM's checkpoint
    marked as written on a GPU: {kind: Run} and their runs folder."""
    trained = tmp_path_factory.mktemp("trained")
    made = {
        kind: runs.train(kind, preset, PROFILE, device="cpu", precision="fp32", runs_dir=trained, progress=False)
        for kind, preset in (("ddpm", "default"), ("cold", "columns"))
    }
    (ckpt,) = training.checkpoints(made["ddpm"].dir)
    _rewrite(ckpt, lambda p: p["logs"].update(device="cuda:0"))
    return trained, made


@pytest.fixture
def shipping(shipped_runs, tmp_path, monkeypatch):
    """A profile whose study ships a DDPM with an EMA and a cold model (weights kept under
    tmp_path), with those two runs trained in fp32; a study here asks for bf16 (another key)."""
    monkeypatch.setitem(config.PROFILES, PROFILE.name, PROFILE)
    monkeypatch.setattr(
        study,
        "RUNS",
        (
            study.StudyRun("ddpm", "default", ema=True, profiles=(PROFILE.name,), shipped=True),
            study.StudyRun("ddpm", "testing", profiles=(PROFILE.name,)),
            study.StudyRun("cold", "columns", budget="short", profiles=(PROFILE.name,), shipped=True),
        ),
    )
    monkeypatch.setattr(config, "WEIGHTS_DIR", tmp_path / "weights")
    return shipped_runs


def _members(path):
    with tarfile.open(path, "r:xz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_packed_runs_open_here_without_training_in_their_own_precision(shipping, tmp_path):
    trained, made = shipping
    path = shipped.pack(PROFILE.name, runs_dir=trained, log=lambda *_: None)
    assert path == config.WEIGHTS_DIR / "runs-shiptest.tar.xz" and path.stat().st_size <= shipped.MAX_BYTES
    manifest = shipped.manifest(PROFILE.name)
    assert [(r["kind"], r["preset"], r["device"], r["precision"]) for r in manifest["runs"]] == [
        ("ddpm", "default", "cuda", "fp32"),
        ("cold", "columns", "cpu", "fp32"),
    ]
    members = _members(path)
    for r in manifest["runs"]:
        ckpt = next(n for n in r["files"] if n.startswith("ckpt-"))
        payload = torch.load(io.BytesIO(members[f"{r['dir']}/{ckpt}"].partition(b"\n")[2]), weights_only=True)
        assert "optim" not in payload and set(payload["rng"]) == {"torch"}
    assert shipped.pack(PROFILE.name, runs_dir=trained, dest=tmp_path / "again.tar.xz", log=lambda *_: None)
    assert (tmp_path / "again.tar.xz").read_bytes() == path.read_bytes()  # reproducible bytes

    laptop = tmp_path / "laptop"  # a study here in bf16: another key than the shipped fp32 runs
    ddpm = runs.train("ddpm", "default", PROFILE, device="cpu", precision="bf16", runs_dir=laptop, progress=False)
    assert ddpm.cached and ddpm.settings.precision == "fp32" and ddpm.key == made["ddpm"].key
    assert _same_weights(ddpm.model, made["ddpm"].model) and _same_weights(ddpm.ema_model, made["ddpm"].ema_model)
    assert ddpm.sampling_batch == hardware.SAMPLING_BATCH["cuda"]
    cold_cfg = runs.preset_config("cold", "columns")
    model = runs.finished_model("cold", cold_cfg, PROFILE, device="cpu", precision="bf16", runs_dir=laptop)
    assert model is not None and _same_weights(model, made["cold"].model)
    # a run the study does not ship is trained as always
    other = runs.train("ddpm", "testing", PROFILE, device="cpu", precision="fp32", runs_dir=laptop, progress=False)
    assert not other.cached and other.settings.precision == "fp32"


def _rebuild(path, change_manifest=None, change_member=None):
    members = _members(path)
    doc = json.loads(members.pop(shipped.MANIFEST))
    if change_manifest:
        change_manifest(doc)
    if change_member:
        change_member(members)
    runs_ = [(r, {n: members[f"{r['dir']}/{n}"] for n in r["files"]}) for r in doc["runs"]]
    path.write_bytes(shipped._archive_bytes(doc["profile"], runs_))


def test_a_shipped_run_the_present_code_would_not_train_is_not_used(shipping, tmp_path, capsys):
    trained, _ = shipping
    path = shipped.pack(PROFILE.name, runs_dir=trained, log=lambda *_: None)
    _rebuild(path, change_manifest=lambda d: d["runs"][0].update(key="0123456789ab"))
    laptop = tmp_path / "laptop"
    run = runs.train("ddpm", "default", PROFILE, device="cpu", precision="fp32", runs_dir=laptop, progress=False)
    assert not run.cached and run.dir.parent == laptop
    assert "is not what the present code trains" in capsys.readouterr().out


def test_a_damaged_shipped_file_is_refused_and_nothing_is_written(shipping, tmp_path):
    trained, _ = shipping
    path = shipped.pack(PROFILE.name, runs_dir=trained, log=lambda *_: None)

    def flip(members):
        name = next(n for n in members if n.startswith("ddpm-") and "/ckpt-" in n)
        data = bytearray(members[name])
        data[-100] ^= 0xFF
        members[name] = bytes(data)

    _rebuild(path, change_member=flip)
    laptop = tmp_path / "laptop"
    with pytest.raises(shipped.ShippedError, match="fails its SHA-256 check; restore it with git"):
        runs.train("ddpm", "default", PROFILE, device="cpu", precision="fp32", runs_dir=laptop, progress=False)
    assert not list(laptop.rglob("*.pt")) and not list(laptop.rglob("run.json"))


def test_packing_keeps_within_its_limit_and_names_what_it_leaves_out(shipping, tmp_path):
    trained, _ = shipping
    full = shipped.pack(PROFILE.name, runs_dir=trained, dest=tmp_path / "all.tar.xz", log=lambda *_: None)
    said = []
    part = shipped.pack(
        PROFILE.name,
        runs_dir=trained,
        dest=tmp_path / "part.tar.xz",
        max_bytes=full.stat().st_size - 1,
        log=said.append,
    )
    assert [r["preset"] for r in json.loads(_members(part)[shipped.MANIFEST])["runs"]] == ["default"]
    assert any(m.startswith("cold-columns-") and "left out" in m for m in said), said
    with pytest.raises(shipped.ShippedError, match="no shipped run of 'shiptest' fits in 1000 bytes"):
        shipped.pack(PROFILE.name, runs_dir=trained, dest=tmp_path / "none.tar.xz", max_bytes=1000, log=said.append)
    assert not (tmp_path / "none.tar.xz").exists()


def test_packing_a_run_that_is_not_finished_names_it(shipping, tmp_path):
    with pytest.raises(ValueError, match=r"no finished run of ddpm 'default' under profile 'shiptest'"):
        shipped.pack(PROFILE.name, runs_dir=tmp_path / "empty", log=lambda *_: None)
