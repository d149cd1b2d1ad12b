"""Evaluate a checkpoint: `python eval.py ckpt=outputs/.../checkpoints/best.ckpt [data.root=...]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("AVLAB_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Rebuild the run stored in the checkpoint and test it."""
    from avlab.run import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
