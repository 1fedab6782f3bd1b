"""`python -m m2tune …`: the m2tune command."""
from m2tune.cli import main

main()
