"""Your own images, measured on images whose truth is known: MNIST's training digits written out as a
folder of PNGs, dark ink on white paper, one sub-folder per class named in words.

    python benchmarks/folder_data.py [--num 5000] [--steps 1500] [--root runs/folder_data]

1. Writes the first NUM training digits as `ROOT/digits/<name>/<index>.png`, inverted (dark ink on
   white), in words ("zero" ... "nine").
2. Prepares the folder as `train --data` does and checks that the prepared arrays are the IDX file's
   digits byte for byte (`--invert auto` finds the light paper and inverts it back).
3. Trains two tiny runs of 20 steps on the same seed, one on the prepared folder and one on the same
   digits taken from the IDX file, and checks that they end with the same weights.
4. Trains the default model on the folder for STEPS steps (`train --data FOLDER --max-steps`, the
   README's budget), draws 100 of each class by name (`sample --classes`), and reads them with the
   shipped MNIST classifier (after mapping each name to its digit and inverting back): how often a
   class comes out as itself, and how many minutes that took on two cores (wall time, and at the
   median pace of the run's log, which is what an idle machine gives).
Writes benchmarks/results/folder_data.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report import markdown_table, write_report

from mnist_diffusion import datasets
from mnist_diffusion.classifier import embed, load_classifier
from mnist_diffusion.cli import main as command_line
from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.data import load_mnist
from mnist_diffusion.pipeline import Pipeline
from mnist_diffusion.rundir import RunDirectory
from mnist_diffusion.train import Trainer

RESULTS = Path(__file__).parent / "results"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_folder(images: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    for word in WORDS:
        (folder / word).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(255 - image).save(folder / WORDS[label] / f"{index:06d}.png")


def idx_order(prepared: datasets.Prepared, labels: np.ndarray) -> np.ndarray:
    """The IDX indices of the prepared images: classes in the folder's (alphabetical) order, files by index."""
    return np.concatenate([np.flatnonzero(labels == WORDS.index(name)) for name in prepared.class_names])


def same_weights(prepared: datasets.Prepared, idx_images: np.ndarray, idx_labels: np.ndarray, root: Path) -> bool:
    """Two 20-step tiny runs, folder and IDX, on the same seed and the same digits: equal weights?"""
    config = TrainConfig(batch_size=32, max_steps=20, checkpoint_every=1000, sample_every=1000, log_every=1000)
    model = preset("tiny", num_classes=10)
    runs = []
    for name, images in (("from_folder", prepared.images), ("from_idx", idx_images)):
        chosen = ~prepared.held_out
        trainer = Trainer(root / name, model, DiffusionConfig(), config, device="cpu",
                          images=torch.from_numpy(images[chosen].copy()),
                          labels=torch.from_numpy(idx_labels[chosen].astype(np.int64)))
        trainer.run()
        runs.append(trainer.model.state_dict())
    return all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])


def read_back(run_dir: Path, classifier) -> dict[str, float]:
    """100 images of each class drawn by name, read by the shipped MNIST classifier: share read as asked."""
    checkpoint = RunDirectory(run_dir).checkpoints()[-1][1]
    pipe = Pipeline.load(checkpoint, device="cpu")
    drawn, labels = pipe.sample_with_labels(classes=list(pipe.class_names), per_class=100, seed=0)
    digits = torch.tensor([WORDS.index(pipe.class_names[k]) for k in labels])
    _, probabilities = embed(classifier, torch.from_numpy(255 - drawn))  # back to bright ink for the classifier
    read = probabilities.argmax(1) == digits
    return {pipe.class_names[k]: read[torch.from_numpy(labels) == k].double().mean().item()
            for k in range(pipe.num_classes)} | {"all": read.double().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--num", type=int, default=5000, help="training digits written as PNGs")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the folder's model")
    parser.add_argument("--root", default="runs/folder_data")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "folder_data"))
    args = parser.parse_args()
    root = Path(args.root)
    images, labels = (array.numpy() for array in load_mnist(args.data_root, "train"))
    images, labels = images[:args.num], labels[:args.num]
    started = time.perf_counter()
    write_folder(images, labels, root / "digits")
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    prepared = datasets.prepare(str(root / "digits"), log=print)
    prepare_s = time.perf_counter() - started
    order = idx_order(prepared, labels)
    byte_equal = bool(np.array_equal(prepared.images, images[order]))
    weights_equal = same_weights(prepared, images[order], prepared.labels, root / "equal")
    run_dir = root / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    code = command_line(["train", "--data", str(root / "digits"), "--run-dir", str(run_dir),
                         "--max-steps", str(args.steps)])
    train_s = time.perf_counter() - started
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    pace = statistics.median(row["images_per_s"] for row in log)
    read = read_back(run_dir, load_classifier()) if code == 0 else {}
    result = {"num": args.num, "write_s": round(write_s, 1), "prepare_s": round(prepare_s, 1),
              "dark_ink_detected": prepared.dark_ink, "held_out": int(prepared.held_out.sum()),
              "prepared_equal_idx": byte_equal, "weights_equal": weights_equal, "steps": args.steps,
              "train_s": round(train_s), "minutes_at_median_pace": round(args.steps * 128 / pace / 60, 1),
              "read_as_asked": read, "date": time.strftime("%Y-%m-%d")}
    print(result, flush=True)
    write_report(args.out, result, [
        f"# A folder of your own images ({result['date']})", "",
        f"`python benchmarks/folder_data.py --num {args.num} --steps {args.steps}`: the first {args.num:,} MNIST "
        "training digits written as PNGs, dark ink on white, in class folders named in words; prepared as "
        f"`train --data` prepares a folder; the default model trained on it for {args.steps:,} steps of 128 on two "
        "CPU cores, then 100 of each class drawn by name and read by the shipped MNIST classifier.", "",
        *markdown_table(["", "value"], [
            ["seconds to write the PNGs / to prepare them", f"{write_s:.1f} / {prepare_s:.1f}"],
            ["light paper found and inverted back", "yes" if prepared.dark_ink else "no"],
            ["prepared arrays equal the IDX digits, byte for byte", "yes" if byte_equal else "NO"],
            ["20 tiny steps on folder and on IDX digits end with equal weights", "yes" if weights_equal else "NO"],
            ["held-out images (by content hash)", f"{int(prepared.held_out.sum()):,} of {len(prepared.images):,}"],
            ["training minutes: as it went here (beside other work) / at the median pace of its log",
             f"{train_s / 60:.1f} / {result['minutes_at_median_pace']}"],
            [f"drawn by name after {args.steps:,} steps, read as asked", f"{100 * read.get('all', 0):.1f}%"],
            *[[f"... {name}", f"{100 * share:.0f}%"] for name, share in read.items() if name != "all"]])])


if __name__ == "__main__":
    main()
