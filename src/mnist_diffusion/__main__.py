"""`python -m mnist_diffusion` (and `torchrun -m mnist_diffusion`) run the command line; `start` is
also the `mnist-diffusion` console script."""

import os
import sys


def start() -> int:
    """The command line, after the checks that must come before torch loads: a current directory that
    was deleted (torch's libraries then abort with a oneMKL fatal error) and too little memory for torch
    itself each end in one line and exit 1, like every other failure of the environment."""
    try:
        os.getcwd()
    except FileNotFoundError:
        print("mnist-diffusion: error: the current directory no longer exists; cd to one that does",
              file=sys.stderr)
        return 1
    try:
        from mnist_diffusion.cli import main
    except (MemoryError, ImportError) as error:  # a shared library that cannot be mapped is an ImportError
        why = "out of memory" if isinstance(error, MemoryError) or "map" in str(error) else str(error)
        print(f"mnist-diffusion: error: cannot load torch: {why} (it needs about 1 GB of memory)", file=sys.stderr)
        return 1
    return main()


if __name__ == "__main__":
    sys.exit(start())
