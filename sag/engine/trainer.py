"""``train(config)``: the paper's training loop with validation, checkpoints, resume, AMP and DDP."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sag.atomic import remove_stale
from sag.engine import checkpoint as ckpt
from sag.engine.config import IDENTITY_FIELDS, TrainConfig
from sag.engine.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    setup_distributed,
)
from sag.engine.interrupts import on_checkpoint_signal, stop_on_sigterm
from sag.engine.precision import autocast, autocast_dtype, make_scaler
from sag.engine.recipe import build_optimizer, build_scheduler
from sag.engine.runlock import RunLock
from sag.engine.runlog import (
    append_metrics,
    existing_run_files,
    format_table,
    read_metrics,
    read_run_config,
    remove_run_files,
    summary_rows,
    truncate_metrics,
    write_json_atomic,
)
from sag.engine.split import carve_validation, default_val_ids, hold_out_images
from sag.evaluation import evaluate
from sag.evaluation.protocol import describe_record

EpochCallback = Callable[[dict[str, Any]], None]
CHECKPOINT_OVERHEAD = 0.05  # at most this fraction of the run's time goes to writing last.pt (see _checkpoint_due)


@dataclass
class RunResult:
    """What a finished run produced: its folder, the best validation epoch, the test scores and the epoch log."""

    run_dir: Path
    best: dict[str, Any]  # {"epoch" tested (best validation or last), and the validation metrics of that epoch}
    final: dict[str, Any]  # test metrics of that epoch: rank1, rank5, rank10, mAP, mINP, cmc
    history: list[dict[str, Any]]  # metrics.jsonl


def train(config: TrainConfig, callbacks: Sequence[EpochCallback] = ()) -> RunResult:
    """Train ``config`` into ``config.out`` and test the best or last epoch (``test_checkpoint``); ``callbacks`` get
    each epoch's record.

    Under ``torchrun`` every process calls this; rank 0 alone writes files and prints.
    """
    cfg = config.resolved()
    cfg.validate()
    ctx = setup_distributed(cfg.device)
    try:
        run = _Run(cfg, ctx, callbacks)
        # SIGTERM stops like Ctrl-C, SIGUSR1 checkpoints after the epoch; the run dir is unlocked however we leave
        with stop_on_sigterm(), on_checkpoint_signal(run.request_checkpoint), run.lock:
            return run.run()
    except KeyboardInterrupt:
        if ctx.is_main:
            print(f"\ninterrupted; continue with: python -m sag train --out {cfg.out} --resume", file=sys.stderr)
        raise
    finally:
        cleanup_distributed(ctx)


class _Run:
    """One call of ``train``: state shared by the setup, the epoch loop and the final test."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, callbacks: Sequence[EpochCallback]) -> None:
        self.cfg, self.ctx, self.callbacks = cfg, ctx, list(callbacks)
        self.run_dir = Path(cfg.out)
        self.device = ctx.device
        self.start_time = time.perf_counter()
        self.last_checkpoint: tuple[float, float] | None = None  # (when the last one ended, how long it took)
        self.save_now = False  # set (e.g. by a signal handler) to checkpoint after the current epoch
        self.pending_best: tuple[int, dict[str, torch.Tensor]] | None = None  # best weights not yet in best.pt
        self.lock = RunLock(self.run_dir)  # held by rank 0 from before it reads RUN_DIR until the run ends

    def request_checkpoint(self) -> None:
        """Write last.pt after the current epoch (SIGUSR1), whatever the checkpoint rule would say."""
        self.save_now = True  # only a flag: a signal handler must not print (the main thread may be printing)

    # ------------------------------------------------------------------ setup
    def log(self, message: str) -> None:
        """Print on rank 0 only."""
        if self.ctx.is_main:
            print(message, flush=True)

    def run(self) -> RunResult:
        """Set up, train the remaining epochs, test the best or the last epoch."""
        cfg = self.cfg
        self._lock_run_dir()  # an existing RUN_DIR another run is writing (or --resume-ing) is refused at once
        found, state = self._check_run_dir()
        if isinstance(state, RunResult):
            return state
        # everything that can fail on bad input happens before the run dir is touched
        dataset = self._load_dataset()
        if cfg.validation == "ids":  # held-out ids, scored like the test set
            val_ids = default_val_ids(dataset.num_train_ids) if cfg.val_ids is None else cfg.val_ids
            split = carve_validation(dataset.train, val_ids, seed=cfg.seed)
        elif cfg.validation == "images":  # every id trains; one image per id scores loss and accuracy
            val_ids, split = 0, hold_out_images(dataset.train)
        else:
            val_ids, split = 0, carve_validation(dataset.train, 0)
        self.dataset, self.split, self.val_ids = dataset, split, val_ids

        _seed_everything(cfg.seed)
        from sag.models import build_model

        self.model = build_model(
            cfg.backbone,
            num_classes=split.num_classes,
            depths=cfg.depths,
            preset=cfg.preset,
            pretrained=cfg.pretrained,
            input_size=cfg.input_size,
        ).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.spec = ckpt.model_spec(cfg, split.num_classes)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.optimizer = build_optimizer(self.model, cfg.recipe, cfg.lr)
        self.scheduler = build_scheduler(self.optimizer, cfg.recipe)
        self.scaler = make_scaler(self.device, self.amp_dtype)
        start_epoch, self.best, self.elapsed, self.wall_before = 1, {}, 0.0, 0.0
        rng_state = None
        if state is not None:
            start_epoch, rng_state = self._restore(state)
        self.loader = self._make_loader()

        found = self._lock_run_dir(found)
        self._claim_run_dir(found, start_epoch - 1)
        self._write_config()
        self._describe(start_epoch)
        self.train_model = self._wrap_model()
        if rng_state is not None:
            ckpt.restore_rng_state(rng_state)
        if self.ctx.distributed:
            _seed_everything(cfg.seed + 7919 * self.ctx.rank + start_epoch)  # distinct dropout per process
        for epoch in range(start_epoch, cfg.epochs + 1):
            self._epoch(epoch)
        return self._finish()

    def _check_run_dir(self) -> tuple[list[str], dict[str, Any] | RunResult | None]:
        """Read-only checks of RUN_DIR: (run files found, last.pt state to resume / a finished run's result / None)."""
        cfg, run_dir = self.cfg, self.run_dir
        found = existing_run_files(run_dir)
        if found and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(
                f"{run_dir} already holds a run ({', '.join(found)}); pass --resume to continue it, "
                "--overwrite to start it over, or choose another --out"
            )
        if not cfg.resume:
            return found, None
        if "config.json" not in found and "last.pt" not in found:
            raise FileNotFoundError(f"nothing to resume in {run_dir} (no config.json or last.pt); drop --resume")
        if "config.json" in found:
            _check_same_run(read_run_config(run_dir / "config.json"), cfg, run_dir / "config.json")
        if "last.pt" not in found:
            self.log(f"{run_dir} has no checkpoint yet: starting from epoch 1")
            return found, None
        state = ckpt.read_checkpoint(run_dir / "last.pt", for_resume=True)
        _check_same_run(TrainConfig.from_dict(state["config"]), cfg, run_dir / "last.pt")
        if state["epoch"] > cfg.epochs:
            raise ValueError(
                f"--resume --epochs {cfg.epochs}: {run_dir / 'last.pt'} has already trained {state['epoch']} epochs; "
                f"pass --epochs {state['epoch']} or more, or start over with --overwrite"
            )
        if "summary.json" in found and state["epoch"] >= cfg.epochs:
            self.log(f"{run_dir} is already finished ({state['epoch']} epochs); nothing to do")
            summary = json.loads((run_dir / "summary.json").read_text())
            self.log(format_table(summary_rows(summary), title="sag train: summary"))
            return found, _stored_result(run_dir)
        return found, state

    def _lock_run_dir(self, found: list[str] | None = None) -> list[str]:
        """Rank 0 locks RUN_DIR (at first only if it exists; with ``found``, creating it and refusing run files that
        another run wrote since ``found`` was listed); returns the run files; every process raises rank 0's error."""
        failure, now = None, list(found or [])
        if self.ctx.is_main and (found is not None or self.run_dir.is_dir()):
            try:
                self.lock.acquire()
                if found is not None:
                    now = existing_run_files(self.run_dir)
                    if now != found and not self.cfg.overwrite:
                        raise FileExistsError(
                            f"another run wrote {', '.join(now)} to {self.run_dir} while this one was starting; "
                            "pass --resume to continue it, --overwrite to start it over, or choose another --out"
                        )
            except OSError as err:
                failure = err
        failure = broadcast_object(self.ctx, failure)
        if failure is not None:
            raise failure
        return now

    def _claim_run_dir(self, found: list[str], done_epochs: int) -> None:
        """Rank 0 clears RUN_DIR for --overwrite, or trims it to the resumed checkpoint; then everyone goes on."""
        barrier(self.ctx)  # every process has looked at RUN_DIR before rank 0 changes it
        if self.ctx.is_main:
            run_dir = self.run_dir
            if self.cfg.overwrite and found:
                remove_run_files(run_dir, found)
                self.log(f"--overwrite: removed {', '.join(found)} from {run_dir}")
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale(run_dir)  # half-written files of a killed run (the lock says no one else writes here)
            if self.cfg.resume:
                truncate_metrics(run_dir / "metrics.jsonl", done_epochs)  # epochs after the checkpoint are redone
                (run_dir / "summary.json").unlink(missing_ok=True)  # an extended run is no longer finished
                if done_epochs == 0:
                    (run_dir / "best.pt").unlink(missing_ok=True)
        barrier(self.ctx)

    def _load_dataset(self) -> Any:
        """The dataset; the synthetic one is generated (by rank 0) when missing."""
        from sag.data import load_dataset

        cfg = self.cfg
        root = Path(cfg.data_root)
        if cfg.dataset == "synthetic":
            failure = None
            if self.ctx.is_main:  # rank 0 generates; the others wait, then read what it wrote
                if not root.exists():
                    self.log(f"generating the synthetic dataset in {root} (first run only)")
                try:
                    dataset = load_dataset("synthetic", root, generate_if_missing=True, **cfg.dataset_options)
                except (ValueError, FileNotFoundError, FileExistsError) as err:
                    failure = err
            failure = broadcast_object(self.ctx, failure)  # every process raises rank 0's error, none hangs
            if failure is not None:
                raise failure
            if not self.ctx.is_main:
                dataset = load_dataset("synthetic", root, **cfg.dataset_options)
            return dataset
        if not root.exists():
            raise FileNotFoundError(
                f"data root {root} does not exist; put {cfg.dataset} there (python -m sag download {cfg.dataset} "
                f"--root {root}) or pass the right --data-root"
            )
        return load_dataset(cfg.dataset, root, **cfg.dataset_options)

    def _make_loader(self) -> Any:
        """The training loader over this process's shard."""
        from sag.data import make_train_loader

        cfg = self.cfg
        loader = make_train_loader(
            self.split.train,
            preset=cfg.transforms,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            seed=cfg.seed,
            device=self.device,
            resident=cfg.resident,
            size=cfg.input_size,
            drop_last=cfg.drop_last,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            progress=self.cfg.progress and self.ctx.is_main,
        )
        if len(loader) == 0:
            raise ValueError(
                f"{len(self.split.train)} training images cannot fill one batch of {cfg.batch_size} per process "
                f"x {self.ctx.world_size} process(es); lower --batch-size"
            )
        per_process = -(-len(self.split.train) // self.ctx.world_size)
        if not cfg.drop_last and per_process % cfg.batch_size == 1 and _has_batchnorm1d(self.model):
            raise ValueError(
                f"with {len(self.split.train)} training images and --batch-size {cfg.batch_size} the last batch of "
                "each epoch holds 1 image, which the head's BatchNorm1d cannot train on; choose another batch size"
            )
        return loader

    def _wrap_model(self) -> nn.Module:
        """DDP and/or torch.compile around the model (the bare model is what checkpoints hold)."""
        model: nn.Module = self.model
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    def _restore(self, state: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Load model, optimiser, scheduler and scaler from a last.pt state; returns (next epoch, rng state)."""
        ckpt.check_model_spec(state["model_spec"], self.spec, self.run_dir / "last.pt")
        ckpt.load_model_state(self.model, state["model"], self.run_dir / "last.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best = dict(state.get("best") or {})
        self.elapsed = float(state.get("elapsed", 0.0))  # training seconds so far
        self.wall_before = float(state.get("wall", 0.0))  # wall-clock seconds of the earlier sessions
        if int(state.get("world_size", 1)) != self.ctx.world_size:
            self.log(
                f"note: the run used {state['world_size']} process(es), this session {self.ctx.world_size}: "
                f"the effective batch is now {self.cfg.batch_size * self.ctx.world_size}"
            )
        epoch = int(state["epoch"])
        self.log(f"resuming {self.run_dir} after epoch {epoch}")
        return epoch + 1, state["rng"]

    def _write_config(self) -> None:
        """config.json: the resolved config, the recipe and the process layout."""
        if not self.ctx.is_main:
            return
        cfg = self.cfg
        record = cfg.to_dict() | {
            "recipe": cfg.recipe.to_dict(),
            "protocol": cfg.protocol,
            "val_ids_used": self.val_ids,
            "val_images": len(self.split.images),
            "num_classes": self.split.num_classes,
            "world_size": self.ctx.world_size,
            "effective_batch_size": cfg.batch_size * self.ctx.world_size,
        }
        write_json_atomic(self.run_dir / "config.json", record)

    def _describe(self, start_epoch: int) -> None:
        """Say what is about to happen, in a few lines."""
        cfg, split, recipe = self.cfg, self.split, self.cfg.recipe
        depths = "baseline" if not cfg.depths else "D" + ",".join(map(str, cfg.depths))
        lr_new = cfg.lr * recipe.lr_new / recipe.lr_backbone
        if split.held_out:
            val = (
                f"{len(split.held_out)} ids held out for validation ({len(split.query)} query / {len(split.gallery)} "
                "gallery images)"
            )
        elif split.images:
            val = f"{len(split.images)} validation images (one per id, loss and accuracy)"
        else:
            val = "no validation split"
        tested = "the last epoch" if cfg.test_checkpoint == "last" or not self._has_validation else "the best epoch"
        batch = f"batch {cfg.batch_size}"
        if self.ctx.world_size > 1:
            batch += f" x {self.ctx.world_size} processes = {cfg.batch_size * self.ctx.world_size} effective"
        self.log(
            f"sag train: {cfg.backbone} {depths}, {cfg.preset} recipe, {cfg.dataset} at {cfg.data_root}\n"
            f"  train: {len(split.train)} images of {split.num_classes} ids; {val}\n"
            f"  epochs {start_epoch}..{cfg.epochs}, {batch}, SGD lr {cfg.lr:g} / {lr_new:g} "
            f"m={recipe.momentum} wd={recipe.weight_decay:g}{' nesterov' if recipe.nesterov else ''}, "
            f"StepLR({recipe.step_size}, {recipe.gamma:g}), epoch 1 at step {recipe.step_offset}\n"
            f"  test: {tested}, {describe_record(cfg.protocol)}\n"
            f"  {cfg.precision} on {self.device}{', channels_last' if cfg.channels_last else ''}"
            f"{', compiled' if cfg.compile else ''}{', device-resident data' if cfg.resident else ''} -> {self.run_dir}"
        )

    # ------------------------------------------------------------------ the loop
    def _epoch(self, epoch: int) -> None:
        """Train one epoch, maybe validate, log and checkpoint."""
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        stats = self._train_epoch(epoch)
        self.scheduler.step()
        record: dict[str, Any] = {"epoch": epoch, **stats, "lr": lrs}
        if self._is_eval_epoch(epoch) and self._has_validation:
            val = self._validate() if self.ctx.is_main else None
            record["val"] = broadcast_object(self.ctx, val)
            if self.cfg.test_checkpoint == "best" and (not self.best or _val_key(record["val"]) > _val_key(self.best)):
                self.best = {"epoch": epoch, **record["val"]}
                self._keep_best(epoch)
        self.elapsed += stats["seconds"]
        if self.ctx.is_main:
            append_metrics(self.run_dir / "metrics.jsonl", record)
            requested = self.save_now
            if self._checkpoint_due(epoch):
                self._checkpoint(epoch)
            line = (
                f"epoch {epoch}/{self.cfg.epochs}: loss {stats['loss']:.4f} acc {100 * stats['accuracy']:.1f}% "
                f"{stats['images_per_s']:.0f} img/s lr {lrs[0]:g}/{lrs[1]:g}"
            )
            if requested:
                line += " (last.pt written on SIGUSR1)"
            if "val" in record:
                v = record["val"]
                if "mAP" in v:
                    line += f" | val rank-1 {100 * v['rank1']:.2f} mAP {100 * v['mAP']:.2f}"
                else:
                    line += f" | val loss {v['loss']:.4f} acc {100 * v['accuracy']:.1f}%"
                if self.best:
                    line += f" (best: epoch {self.best['epoch']})"
            self.log(line)
        for callback in self.callbacks:
            callback(record)

    def _is_eval_epoch(self, epoch: int) -> bool:
        """Validate every ``eval_every`` epochs and after the last one."""
        every = self.cfg.eval_every
        return epoch == self.cfg.epochs or (every > 0 and epoch % every == 0)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this process's shard; loss/accuracy/images are summed over processes."""
        model, device = self.train_model, self.device
        model.train()
        self.loader.set_epoch(epoch)
        totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
        bar = tqdm(
            total=len(self.loader),
            desc=f"epoch {epoch}/{self.cfg.epochs}",
            disable=not (self.cfg.progress and self.ctx.is_main) or None,
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
        )
        _sync(device)
        start = last_postfix = time.perf_counter()
        for step, (images, pids) in enumerate(self.loader, start=1):
            images = images.to(device, non_blocking=True)
            pids = pids.to(device, non_blocking=True)
            if self.cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, self.amp_dtype):
                logits = model(images)  # (B, num_classes)
                loss = F.cross_entropy(logits.float(), pids)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with torch.no_grad():  # stays on the device: no sync per step
                totals[0] += loss.detach().double() * len(pids)
                totals[1] += (logits.argmax(1) == pids).sum()
                totals[2] += len(pids)
            bar.update()
            now = time.perf_counter()
            if not bar.disable and (now - last_postfix > 1.0 or step == len(self.loader)):
                loss_sum, correct, seen = totals.tolist()
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.3f}",
                    acc=f"{100 * correct / seen:.1f}%",
                    img_s=f"{seen * self.ctx.world_size / (now - start):.0f}",
                )
                last_postfix = now
        _sync(device)
        seconds = time.perf_counter() - start
        bar.close()
        loss_sum, correct, seen = all_reduce_sum(self.ctx, totals).tolist()
        loss_mean = loss_sum / seen
        if not math.isfinite(loss_mean):
            raise FloatingPointError(
                f"the loss became {loss_mean} in epoch {epoch}; lower --lr or use --precision fp32 / bf16"
            )
        return {
            "loss": loss_mean,
            "accuracy": correct / seen,
            "images": int(seen),
            "images_per_s": seen / seconds,
            "seconds": seconds,
        }

    @property
    def _has_validation(self) -> bool:
        """True when the split holds validation ids or images."""
        return bool(self.split.held_out or self.split.images)

    def _validate(self) -> dict[str, float]:
        """Rank-1/5/10 and mAP on the held-out ids (queries vs gallery, Market-style, cameras respected), or the
        loss and accuracy on the validation images (the released code's val phase)."""
        from sag.data import ReIDDataset

        if self.split.images:
            return self._validate_images()
        val = ReIDDataset(
            name="validation",
            root=Path(self.cfg.data_root),
            train=[],
            query=self.split.query,
            gallery=self.split.gallery,
            num_train_ids=0,
            num_cameras=self.dataset.num_cameras,
        )
        metrics = self._score(val)
        return {key: float(metrics[key]) for key in ("rank1", "rank5", "rank10", "mAP")}

    @torch.no_grad()
    def _validate_images(self) -> dict[str, float]:
        """Cross-entropy and accuracy of the model in eval mode on the validation images (test transforms)."""
        from sag.data import make_eval_loader

        cfg, model = self.cfg, self.model
        loader = make_eval_loader(self.split.images, preset=cfg.transforms, workers=cfg.workers, size=cfg.input_size)
        was_training = model.training
        model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        try:
            for images, pids, _ in loader:
                images, pids = images.to(self.device), torch.as_tensor(pids).to(self.device)
                logits = model.head(model.embed(images)).float()  # (B, num_classes)
                loss_sum += float(F.cross_entropy(logits, pids, reduction="sum"))
                correct += int((logits.argmax(1) == pids).sum())
                seen += len(pids)
        finally:
            model.train(was_training)
        return {"loss": loss_sum / seen, "accuracy": correct / seen}

    def _score(self, dataset: Any) -> dict[str, Any]:
        """Evaluate the bare model (eval transforms and test protocol of the config, at the training input size)."""
        cfg = self.cfg
        return evaluate(
            self.model,
            dataset,
            preset=cfg.preset,
            size=cfg.input_size,
            device=self.device,
            workers=cfg.workers,
            flip=cfg.flip,
            ap=cfg.ap,
            average=cfg.average,
            transforms=cfg.transforms,
        )

    def _state(self, epoch: int) -> dict[str, Any]:
        """Everything --resume needs (only tensors and plain containers, for weights_only loading)."""
        return {
            "model": self.model.state_dict(),
            "model_spec": self.spec,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": ckpt.capture_rng_state(),
            "loader": {"epoch": epoch, "seed": self.cfg.seed},
            "epoch": epoch,
            "best": dict(self.best),
            "elapsed": self.elapsed,
            "wall": self._wall(),
            "config": self.cfg.to_dict(),
            "world_size": self.ctx.world_size,
        }

    def _wall(self) -> float:
        """Wall-clock seconds of the run over all its sessions (setup, validation and test included)."""
        return self.wall_before + time.perf_counter() - self.start_time

    def _checkpoint_due(self, epoch: int) -> bool:
        """After the first and the last epoch of a session, when asked (``save_now``), and otherwise once the time
        since the last checkpoint is long enough that writing one costs at most ``CHECKPOINT_OVERHEAD`` of it."""
        if epoch == self.cfg.epochs or self.save_now or self.last_checkpoint is None:
            return True
        ended, cost = self.last_checkpoint
        return cost <= CHECKPOINT_OVERHEAD * (time.perf_counter() - ended)

    def _checkpoint(self, epoch: int) -> None:
        """Write the pending best.pt, then last.pt: a resumed run never finds a best.pt newer than its last.pt."""
        start = time.perf_counter()
        if self.pending_best is not None:
            self._save_best(*self.pending_best)
            self.pending_best = None
        ckpt.save_checkpoint(self.run_dir / "last.pt", self._state(epoch))
        now = time.perf_counter()
        self.last_checkpoint, self.save_now = (now, now - start), False

    def _keep_best(self, epoch: int) -> None:
        """Hold the new best weights on the CPU until the next checkpoint writes them to best.pt."""
        if self.ctx.is_main:
            weights = {key: value.detach().to("cpu", copy=True) for key, value in self.model.state_dict().items()}
            self.pending_best = (epoch, weights)

    def _save_best(self, epoch: int, weights: dict[str, torch.Tensor] | None = None) -> None:
        """best.pt: the weights of the best validation epoch (default the model's now), no optimiser state."""
        if self.ctx.is_main:
            ckpt.save_checkpoint(
                self.run_dir / "best.pt",
                {
                    "model": self.model.state_dict() if weights is None else weights,
                    "model_spec": self.spec,
                    "epoch": epoch,
                    "best": dict(self.best),
                    "config": self.cfg.to_dict(),
                },
            )

    # ------------------------------------------------------------------ the end
    def _finish(self) -> RunResult:
        """Test the best (or last) epoch on the dataset's query/gallery, write summary.json, print the table."""
        cfg, run_dir = self.cfg, self.run_dir
        if cfg.test_checkpoint == "last" or not self.best:  # the last epoch is tested: best.pt holds it
            last = read_metrics(run_dir / "metrics.jsonl")[-1:] if self.ctx.is_main else []
            self.best = {"epoch": cfg.epochs, **(last[0].get("val") or {} if last else {})}
            self._save_best(cfg.epochs)
        barrier(self.ctx)
        summary: dict[str, Any] | None = None
        if self.ctx.is_main:
            best_state = ckpt.read_checkpoint(run_dir / "best.pt")
            ckpt.load_model_state(self.model, best_state["model"], run_dir / "best.pt")
            metrics = self._score(self.dataset)
            test = {key: float(metrics[key]) for key in ("rank1", "rank5", "rank10", "mAP", "mINP")}
            test["cmc"] = [float(x) for x in np.asarray(metrics["cmc"])[:20]]
            history = read_metrics(run_dir / "metrics.jsonl")
            images = sum(r["images"] for r in history)
            summary = {
                "config": cfg.to_dict(),
                "test": test,
                "best_epoch": self.best["epoch"],
                "best_val": {k: v for k, v in self.best.items() if k != "epoch"},
                "tested": cfg.test_checkpoint if self._has_validation else "last",
                "protocol": metrics["protocol"],
                "images_per_s": images / max(self.elapsed, 1e-9),
                "train_seconds": self.elapsed,
                "wall_seconds": self._wall(),
                "device": _device_name(self.device),
                "world_size": self.ctx.world_size,
                "effective_batch_size": cfg.batch_size * self.ctx.world_size,
                "torch": torch.__version__,
                "sag_version": _sag_version(),
                "git_commit": _git_commit(),
                "run_dir": str(run_dir),
            }
            write_json_atomic(run_dir / "summary.json", summary)
            self.log(format_table(summary_rows(summary), title="sag train: summary"))
        summary = broadcast_object(self.ctx, summary)
        return RunResult(
            run_dir, {"epoch": summary["best_epoch"], **summary["best_val"]}, summary["test"], history_of(run_dir)
        )


def history_of(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run dir's metrics.jsonl."""
    return read_metrics(Path(run_dir) / "metrics.jsonl")


def _stored_result(run_dir: Path) -> RunResult:
    """The RunResult of a finished run, from its summary.json and metrics.jsonl."""
    summary = json.loads((run_dir / "summary.json").read_text())
    best = {"epoch": summary["best_epoch"], **(summary.get("best_val") or {})}
    return RunResult(run_dir, best, summary["test"], history_of(run_dir))


def _check_same_run(saved: TrainConfig, requested: TrainConfig, source: Path) -> None:
    """ValueError naming every identity field on which a resumed run differs from what ``source`` recorded."""
    saved_dict, requested_dict = saved.resolved().to_dict(), requested.to_dict()
    diffs = [
        f"{name}: {saved_dict[name]!r} in the run, {requested_dict[name]!r} requested"
        for name in IDENTITY_FIELDS
        if saved_dict[name] != requested_dict[name]
    ]
    if diffs:
        raise ValueError(
            f"--resume: {source} records a different run ({'; '.join(diffs)}); drop those options to continue "
            "it, or start a new run (--overwrite or another --out)"
        )


def _val_key(val: dict[str, Any]) -> tuple[float, float]:
    """What "best" means: validation (mAP, rank-1) on held-out ids, (accuracy, -loss) on validation images."""
    return (val["mAP"], val["rank1"]) if "mAP" in val else (val["accuracy"], -val["loss"])


def _has_batchnorm1d(model: nn.Module) -> bool:
    """True if the model holds a BatchNorm1d (the released head), which cannot train on a batch of one."""
    return any(isinstance(m, nn.BatchNorm1d) for m in model.modules())


def _seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work so timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    """e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _sag_version() -> str:
    """The installed sag's version."""
    import sag

    return sag.__version__


def _git_commit() -> str | None:
    """HEAD of the sag checkout, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
