"""`python -m lightning_scaling.cli`: the `lightning-scaling` command."""

import sys

from lightning_scaling.cli import main

sys.exit(main())
