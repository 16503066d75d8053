"""`python -m stackrag.cli`."""

from . import main

main(prog_name="stackrag")
