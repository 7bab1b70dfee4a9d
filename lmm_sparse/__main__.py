"""``python -m lmm_sparse``: the ``lmm-sparse`` command (:mod:`lmm_sparse.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
