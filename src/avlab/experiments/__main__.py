"""`python -m avlab.experiments <command>`: see avlab.experiments.cli."""

import sys

from avlab.experiments.cli import main

sys.exit(main())
