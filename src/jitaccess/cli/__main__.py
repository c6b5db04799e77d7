"""``python -m jitaccess.cli``: the same as the ``jitaccess`` command."""

from jitaccess.cli import main

main()
