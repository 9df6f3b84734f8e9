"""``python -m blindspot`` runs the command line."""

import sys

from blindspot.cli import main

sys.exit(main())
