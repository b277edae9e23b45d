"""``python -m forensics`` runs the command line."""
import sys

from forensics.cli import main

sys.exit(main())
