"""``python -m forensics.cli`` (as torchrun runs it) is the ``forensics`` command."""
from forensics.cli import run

run()
