"""`python -m tunesmith.cli` (as the jobs worker, --nproc and the tests start it): the CLI."""

import sys

from tunesmith.cli import main

sys.exit(main())
