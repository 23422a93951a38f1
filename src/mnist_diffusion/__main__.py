"""`python -m mnist_diffusion` (and `torchrun -m mnist_diffusion`) run the command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
