"""Analyses that compare finished runs (beyond the seed's protocol): the DDIM sweep, raw against
EMA weights, networks side by side, and the rows of the cold-diffusion figures.

Nothing here trains; the DDIM sweep is cached in its run folder, keyed like every derived result
(`runs.derived_key`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import torch

from . import config, hardware, store
from .runs import PROTOCOL, derived_key, final_metrics, final_protocol, final_subsets, on_first
from .training import Run, sample_images


# --------------------------------------------------------------------------- DDIM
def ddim_sweep(run: Run, prof: config.Profile, seed: int = 0, progress: bool = True, fresh: str | None = None) -> dict:
    """Classifier FID and IS against the number of sampling steps: DDIM with S in prof.ddim_steps and
    eta 0 and 1, and Prince's sampler (S = T), each on prof.ddim_samples images from the same noise
    seed, with the seconds per sample and the speed-up over Prince's sampler, timed side by side in
    this computation. Where the run's final sample holds the sweep's n images (its size, or one of
    `runs.final_subsets`), Prince's row is the run's final metrics on them (the very same images: same
    noise seed and batches) and Prince's sampler only draws PROTOCOL.timing_samples images to be
    timed. Cached in the run folder."""
    from . import metrics

    n = prof.ddim_samples
    spec = dict(
        what="ddim",
        run=run.key,
        steps=list(prof.ddim_steps),
        n=n,
        seed=seed,
        batch=run.sampling_batch,
        precision=run.settings.precision,
    )
    T = run.model.T
    ddim = [(s, eta) for s in prof.ddim_steps if s <= T for eta in PROTOCOL.ddim_etas]

    def timed(count: int, **kw) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        images = sample_images(
            run.model,
            count,
            seed + PROTOCOL.final_seed_offset,
            progress=progress,
            precision=run.settings.precision,
            batch_size=run.sampling_batch,
            **kw,
        )
        return images, (time.perf_counter() - t0) / count

    def score(images: torch.Tensor) -> dict:
        return metrics.evaluate(
            images,
            "test",
            ("classifier",),
            protocol=final_protocol(),
            seed=seed,
            strict_range=False,
            log=lambda *_: None,
        )

    def row(sampler: str, steps: int, eta, m: dict, seconds: float, timed_on: int) -> dict:
        return {
            "sampler": sampler,
            "steps": steps,
            "eta": eta,
            "fid_classifier": m["fid_classifier"],
            "fid_classifier_se": m["fid_classifier_se"],
            "is_classifier_mean": m["is_classifier_mean"],
            "n": m["n"],
            "seconds_per_sample": seconds,
            "timed_on": timed_on,
        }

    def compute() -> dict:
        if n == prof.final_samples or n in final_subsets(run, prof):  # the final sample's first n images
            m = on_first(final_metrics(run, prof, seed, progress, fresh=fresh), n)
            k = min(PROTOCOL.timing_samples, n)
            _, seconds = timed(k)
        else:
            images, seconds = timed(n)
            m, k = score(images), n
        rows = [row("prince", T, None, m, seconds, k)]
        for steps, eta in ddim:
            images, seconds = timed(n, sampler="ddim", steps=steps, eta=eta)
            rows.append(row("ddim", steps, eta, score(images), seconds, n))
        base = rows[0]["seconds_per_sample"]
        for r in rows:
            r["speedup"] = base / r["seconds_per_sample"]
        return {"preset": run.label, "n": n, "T": T, "rows": rows}

    key = derived_key(ddim_sweep, ("metrics", "ddpm"), **spec)
    return store.cached_json(run.dir / f"ddim-{key}.json", compute, fresh=fresh)


def ema_comparison(run: Run) -> dict:
    """Raw against EMA weights at every epoch where the EMA was scored (same samples' noise)."""
    if not run.metrics_ema:
        raise ValueError(f"run {run.dir.name} has no EMA metrics (its settings have ema_decay=None)")
    return {
        "preset": run.label,
        "decay": run.settings.ema_decay,
        "per_epoch": {e: {"raw": run.metrics[e], "ema": run.metrics_ema[e]} for e in sorted(run.metrics_ema)},
    }


def network_comparison(runs: dict[str, Run], finals: dict[str, dict]) -> dict:
    """Two or more networks of one model kind side by side (appendix C: the U-Net beside the CNN), from
    their runs and final metrics: per network its size (`models.describe`), optimiser steps, measured
    training seconds (the optimiser steps alone, per epoch and in all) and final metrics; and two
    matched points against the first network (the reference), both from the per-epoch evaluation:
    `same_steps`, each network at the last epoch of the shortest run that the reference also
    evaluated (every run here takes the same steps per epoch), and `same_time`, the reference's
    evaluated epoch whose training time is nearest each other network's whole run."""
    from . import models

    first = next(iter(runs))
    steps_per_epoch = {name: len(r.iter_loss) // max(len(r.epoch_loss), 1) for name, r in runs.items()}
    if len(set(steps_per_epoch.values())) > 1:
        raise ValueError(
            f"the runs take different steps per epoch ({steps_per_epoch}); network_comparison matches them by epoch"
        )
    out: dict = {"reference": first, "networks": {}}
    for name, r in runs.items():
        cumulative = list(itertools.accumulate(float(v) for v in r.logs.get("train_seconds", [])))
        out["networks"][name] = {
            **models.describe(r.model.net),
            "net": r.model.cfg.net,
            "config": dataclasses.asdict(r.model.cfg),
            "precision": r.settings.precision,
            "epochs": len(r.epoch_loss),
            "steps": len(r.iter_loss),
            "steps_per_epoch": steps_per_epoch[name],
            "train_seconds": cumulative[-1] if cumulative else None,
            "train_seconds_cumulative": cumulative,
            "final": finals[name],
        }
    ref = runs[first]
    shortest = min(len(r.epoch_loss) for r in runs.values())
    if shortest in ref.metrics and all(shortest in r.metrics for r in runs.values()):
        out["same_steps"] = {
            "epoch": shortest,
            "steps": shortest * steps_per_epoch[first],
            "models": {name: r.metrics[shortest] for name, r in runs.items()},
        }
    ref_time = out["networks"][first]["train_seconds_cumulative"]
    matched = {}
    for name in runs:
        if name == first or not ref_time or not ref.metrics or out["networks"][name]["train_seconds"] is None:
            continue
        target = out["networks"][name]["train_seconds"]
        epoch = min(ref.metrics, key=lambda e: abs(ref_time[e - 1] - target))
        matched[name] = {
            "epoch": epoch,
            "steps": epoch * steps_per_epoch[first],
            "train_seconds": ref_time[epoch - 1],
            "reference": ref.metrics[epoch],
            "other": runs[name].metrics.get(max(runs[name].metrics, default=0)),
        }
    if matched:
        out["same_time"] = matched
    return out


# --------------------------------------------------------------------------- cold diffusion
def cold_examples(run: Run, n: int = 8, seed: int = 0) -> dict:
    """Rows for a figure: test originals, D(x, T), the three restorations, and unconditional samples."""
    from . import cold
    from .data import test_images

    dev = next(run.model.parameters()).device
    x = test_images(n).to(dev)
    with hardware.autocast(dev.type, run.settings.precision):  # the run's precision, as its samples
        rows = {"original": x.cpu(), **cold.reconstructions(run.model, x)}
    rows["unconditional"] = sample_images(run.model, n, seed, batch_size=n, precision=run.settings.precision)
    return rows
