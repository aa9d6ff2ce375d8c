"""``python -m singexp.report SWEEP_DIR [--wandb] [--json]`` (:mod:`singexp.report.cli`)."""

from singexp.report.cli import main

if __name__ == "__main__":
    main()
