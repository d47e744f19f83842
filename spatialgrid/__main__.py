"""``python -m spatialgrid``: the same as the ``spatialgrid`` script."""

from spatialgrid.cli import main

main()
