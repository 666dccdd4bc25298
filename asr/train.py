"""`asr train`: Hydra config -> datamodule, model, Lightning trainer, fit.

Hydra is used only here, through its compose API (no working-directory changes);
modules receive plain typed arguments.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from .configs import CONF_DIR  # the installed package's asr/conf, else the checkout's conf/
from .data.datamodule import ASRDataModule
from .data.features import FbankOptions
from .data.tokenizer import Tokenizer
from .decoding import DecodeOptions
from .guards import AtomicCheckpointIO, NonFiniteGuard, StepSeed
from .model import ASRModel

log = logging.getLogger(__name__)


def register_schemas() -> None:
    """Config nodes defined in code, so their defaults live in one place: `decode/schema` is
    DecodeOptions (conf/decode/*.yaml build on it; a typo'd or ill-typed field is an error)."""
    from hydra.core.config_store import ConfigStore

    node = OmegaConf.structured(DecodeOptions)
    OmegaConf.set_readonly(node, False)  # Hydra merges the yaml and the overrides into it
    ConfigStore.instance().store(group="decode", name="schema", node=node)


def compose(overrides: list[str], config_dir: str | Path = CONF_DIR, config_name: str = "train") -> DictConfig:
    """The training config with command-line overrides applied (Hydra syntax)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def fit_cmvn(model: ASRModel, dm: ASRDataModule, max_utts: int) -> None:
    """Estimate global CMVN statistics on up to max_utts training utterances."""
    cuts = dm.train_cuts().subset(first=min(max_utts, len(dm.train_cuts())))
    # every rank of a DDP run estimates the same statistics from the same utterances
    loader = dm.eval_loader(cuts, world_size=1, rank=0)

    def feats():
        for batch in loader:
            if batch is not None:
                yield model.fbank(batch.audio, batch.audio_lens)

    model.normalizer.fit_(feats())
    log.info("CMVN from %d frames", int(model.normalizer.count))


def checkpoint_callbacks(ckpt_dir: Path, save_top_k: int, every_steps: int = 0) -> tuple[ModelCheckpoint, ...]:
    """The top-k checkpoints by val_wer, and last.ckpt after every validated epoch and, with
    every_steps > 0, also every `every_steps` optimizer steps (mid-epoch: a killed run resumes
    there, with the sampler at the same batch, losing at most that many steps).

    Separate callbacks, because Lightning's ``save_last`` of a monitored callback (2.6) writes
    last.ckpt only in epochs that also enter the top k (and once more at the very end, with
    the epoch counter already advanced): a crash after epochs that did not improve val_wer
    would resume several epochs back. The unmonitored callbacks save always to the same name
    (no version counter, so a copied experiment resumes into its own last.ckpt rather than
    writing last-v1.ckpt beside a stale one).
    """
    top_k = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="epoch{epoch:02d}-wer{val_wer:.4f}",
        auto_insert_metric_name=False,
        monitor="val_wer",
        mode="min",
        save_top_k=save_top_k,
        save_last=False,
    )
    last = {
        "dirpath": ckpt_dir,
        "filename": ModelCheckpoint.CHECKPOINT_NAME_LAST,
        "monitor": None,
        "save_top_k": 1,
        "save_last": False,
        "enable_version_counter": False,
    }
    callbacks = [top_k, ModelCheckpoint(**last, every_n_epochs=1)]
    if every_steps > 0:
        callbacks.append(ModelCheckpoint(**last, every_n_train_steps=every_steps))
    return tuple(callbacks)


def check_resumable(path: Path) -> None:
    """A clear error for a last.ckpt that cannot be resumed from (copied half, or from an older
    asr without atomic saves), instead of a traceback from deep inside Lightning's restore.
    mmap: only the index is read, so this costs milliseconds even for a large model."""
    from .model import CheckpointError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # zip, pickle and EOF errors
        raise CheckpointError(
            f"{path}: cannot resume, not a readable checkpoint (truncated or corrupt?): {e}; "
            "move it away and resume from another checkpoint copied to last.ckpt"
        ) from e
    if not isinstance(ckpt, dict) or "loops" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: cannot resume, not a Lightning training checkpoint of asr train")


def run_train(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train as configured; returns the path of the best checkpoint (also copied to exp_dir/best.ckpt).

    callbacks: extra Lightning callbacks (Python API), run after asr's own.
    """
    exp = Path(cfg.exp_dir)
    exp.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    (exp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tok_path = Path(cfg.data.tokenizer)
    if not tok_path.exists():
        raise FileNotFoundError(f"{tok_path}: tokenizer not found; run `asr prepare` first")
    tok = Tokenizer.load(tok_path)
    m = OmegaConf.to_container(cfg.model, resolve=True)
    fbank = FbankOptions(**(m.get("features") or {}))
    d = cfg.data
    dm = ASRDataModule(
        d.manifest_dir,
        list(d.train_splits),
        list(d.valid_splits),
        tok,
        max_duration=d.max_duration,
        num_buckets=d.num_buckets,
        speed_perturb=tuple(d.speed_perturb),
        shift_ms=d.shift_ms,
        num_workers=d.num_workers,
        min_utt_duration=d.min_utt_duration,
        max_utt_duration=d.max_utt_duration,
        fbank=fbank,
        seed=cfg.seed,
    )
    model = ASRModel(
        vocab_size=len(tok),
        encoder=m["encoder"],
        heads=m["heads"],
        features=m.get("features"),
        specaug=m.get("specaug"),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        decode=OmegaConf.to_container(cfg.decode, resolve=True),
        frame_skip=m.get("frame_skip"),
    )
    model.tokenizer = tok
    dm.subsampling = model.encoder.subsampling_factor
    ckpt_dir = exp / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resume_from = None
    if cfg.resume:
        if not last.exists():
            raise FileNotFoundError(f"resume=true but {last} does not exist")
        check_resumable(last)
        resume_from = str(last)
        log.info("resuming from %s", last)
    else:
        if last.exists():
            raise FileExistsError(
                f"{exp} already has checkpoints; pass resume=true to continue, or choose another exp_dir"
            )
        fit_cmvn(model, dm, cfg.cmvn_utterances)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters", n_params / 1e6)
    ckpt_cbs = checkpoint_callbacks(ckpt_dir, cfg.save_top_k, cfg.checkpoint_every_steps)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        default_root_dir=str(exp),
        # versioned log folders (tb/version_N, csv/version_N): a resumed run never overwrites earlier logs
        logger=[TensorBoardLogger(str(exp), name="tb"), CSVLogger(str(exp), name="csv")],
        # the top-k callback first: last.ckpt, written after it, then holds its updated best-k list
        callbacks=[
            *ckpt_cbs,
            NonFiniteGuard(exp / "bad_batches.txt", cfg.max_bad_batches_in_a_row),
            StepSeed(cfg.seed),
            LearningRateMonitor(logging_interval="step"),
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # lhotse samplers shard across ranks themselves
    )
    trainer.fit(model, dm, ckpt_path=resume_from)
    best = Path(ckpt_cbs[0].best_model_path or last)
    if trainer.is_global_zero:
        shutil.copyfile(best, exp / "best.ckpt")
        log.info("best checkpoint %s (val_wer %s) copied to %s", best, ckpt_cbs[0].best_model_score, exp / "best.ckpt")
    return exp / "best.ckpt"
