"""``python -m spatialgrid.cli``: the same as the ``spatialgrid`` script."""

from spatialgrid.cli import main

main()
