"""`python -m evalkit.cli <command>`: the same as the `evalkit` console script."""
from evalkit.cli import run

run()
