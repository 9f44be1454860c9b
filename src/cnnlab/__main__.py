"""``python -m cnnlab`` (and ``torchrun -m cnnlab``) run the command line."""
import sys

from .cli import main

sys.exit(main())
