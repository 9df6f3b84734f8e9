"""``python -m blindspot`` runs the command line."""

import sys

from blindspot.cli import main

if __name__ == "__main__":
    sys.exit(main())
