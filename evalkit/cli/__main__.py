"""`python -m evalkit.cli <command>`: the same as the `evalkit` console script."""
from evalkit.cli import run

if __name__ == "__main__":  # not again in a spawned data worker process
  run()
