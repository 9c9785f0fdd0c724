"""``python -m vnflab.scenarios NAME [--json PATH]``: the same as ``vnflab scenario NAME``."""

import argparse
import sys

from vnflab.scenarios import register


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vnflab.scenarios")
    sub = parser.add_subparsers(dest="cmd")
    register(sub)
    args = parser.parse_args(["scenario", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
