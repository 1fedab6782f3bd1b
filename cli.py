"""`python cli.py …` in a source checkout: the `m2tune` command without installing the package.

The installed command is `m2tune = m2tune.cli:main` (pyproject.toml); this file only calls it.
"""
from m2tune.cli import main

if __name__ == "__main__":
    main()
