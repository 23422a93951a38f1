"""A tiny training run on made-up digits, started in a subprocess by the kill and DDP tests.

usage: python tests/worker.py RUN_DIR MAX_STEPS [--save-rank-weights]
Under torchrun it joins the process group like `mnist-diffusion train` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.train import Trainer

from conftest import fake_mnist

# A constant learning rate: the kill test stops runs whose step limit it cannot know in advance, and
# a cosine decay follows the limit (test_train checks resuming under the decay).
# fp32: two processes and one must agree to float tolerance, which bf16's rounding of half batches would blur.
CONFIG = {"batch_size": 16, "checkpoint_every": 1, "log_every": 1, "sample_every": 10**9, "warmup_steps": 3,
          "ema_warmup_steps": 2, "lr": 2e-3, "lr_decay": "none", "precision": "fp32"}


def make_trainer(run_dir: str | Path, max_steps: int, **kwargs) -> Trainer:
    images, labels = fake_mnist(96)
    return Trainer(run_dir, preset("tiny"), DiffusionConfig(num_timesteps=50),
                   TrainConfig(max_steps=max_steps, **CONFIG), images=torch.from_numpy(images),
                   labels=torch.from_numpy(labels.astype("int64")), device="cpu", **kwargs)


if __name__ == "__main__":
    torch.set_num_threads(1)
    trainer = make_trainer(sys.argv[1], int(sys.argv[2]))
    trainer.run()
    if "--save-rank-weights" in sys.argv:
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(Path(sys.argv[1]) / f"rank{os.environ.get('RANK', '0')}.safetensors"))
