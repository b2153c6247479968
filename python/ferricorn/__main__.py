"""``python -m ferricorn``: the same as the ``ferricorn`` script."""

import sys

from ferricorn import main

if __name__ == "__main__":
    sys.exit(main(["ferricorn"] + sys.argv[1:]))
