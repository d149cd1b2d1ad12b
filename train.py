"""Train a model: `python train.py experiment=smile_pretrain` (see conf/ and the README)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("AVLAB_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train, test the best checkpoint, return the optimised metric for sweeps."""
    from avlab.run import train_entry

    return train_entry(cfg)


if __name__ == "__main__":
    main()
