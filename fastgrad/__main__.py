"""`python -m fastgrad`: the same command as the `fastgrad` console script."""
import sys

from fastgrad.app.cli import main

sys.exit(main())
