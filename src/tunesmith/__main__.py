"""`python -m tunesmith` (as torchrun's `-m tunesmith train ...` starts it): the CLI."""

import sys

from tunesmith.cli import main

sys.exit(main())
