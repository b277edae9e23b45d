"""``python -m forensics.cli`` (as torchrun runs it) is the ``forensics`` command."""
import sys

from forensics.cli import main

sys.exit(main())
