"""One BLAS thread for every heatmetro process, unless the user chose otherwise.

numpy's OpenBLAS starts a thread per core when numpy is imported, and each spins for a
while before it sleeps: ~0.1 s of CPU per process measured here (``python -c "import
numpy"``: 0.17 s of user time against 0.07 s with one thread), on the cores a snapshot's
own processes need. Nothing in heatmetro multiplies matrices, so those threads never
have work. Imported by the CLI before anything imports numpy (the variable is read
then); a value already set is kept.
"""

from __future__ import annotations

import os

#: The variable OpenBLAS reads at load time for its thread count.
BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"

os.environ.setdefault(BLAS_THREADS_ENV, "1")
