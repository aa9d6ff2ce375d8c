"""``python -m singexp +experiment=NAME [overrides]``: the one entry point.

User mistakes (a bad key, an unknown option, a missing dataset folder) end in one line on stderr
and exit status 2, without a traceback.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from singexp.config import CONF_DIR, check_group_overrides, quote_group_overrides
from singexp.errors import SingexpError


def _fail(error: SingexpError) -> None:
    print(f"singexp: error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from singexp.tasks import run

    try:
        run(cfg)
    except SingexpError as error:
        _fail(error)


def main() -> None:
    try:
        check_group_overrides(sys.argv[1:])
    except SingexpError as error:
        _fail(error)
    sys.argv[1:] = quote_group_overrides(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
