"""`python -m jax_roialign`: see `jax_roialign._cli`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
