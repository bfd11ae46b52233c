# Copyright (c) lmclip_mm authors.
"""``python -m lmclip_mm configs [NAME] [--list]``: the folder of the
configs this package ships, or the path of one (see
:mod:`lmclip_mm.configs`)."""
import argparse
import sys
from typing import List, Optional

from .configs import config_dir, config_names, config_path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m lmclip_mm')
    commands = parser.add_subparsers(dest='command', required=True)
    configs = commands.add_parser(
        'configs', help='print the folder of the configs lmclip_mm ships, '
        'or the path of one of them')
    configs.add_argument('name', nargs='?',
                         help='a config name, e.g. lmclip_voc_mlt_vitb16')
    configs.add_argument('--list', action='store_true',
                         help='list the config names')
    args = parser.parse_args(argv)
    try:
        if args.list:
            print('\n'.join(config_names()))
        else:
            print(config_path(args.name) if args.name else config_dir())
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
