"""Fault injection for `rayrag serve`'s tests: generator replicas that hold each batch while the test says so.

`python tests/_holding_generator.py DIR serve ARGS...` is `rayrag serve ARGS...` whose generator replicas, while
DIR/hold exists, write DIR/received when a batch arrives and hold it: the test knows a request is inside a replica
before it kills the replica. Production code knows nothing of it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def holding_generator(hold_dir: str | Path) -> type:
    """The `Generator` subclass that holds batches as the files in `hold_dir` say (see above)."""
    from rayrag.serving.app import Generator

    d = str(hold_dir)

    # Defined in this function, so that Ray ships it to its workers by value: they need not import this file.
    class HoldingGenerator(Generator):
        def _answer(self, *args, **kwargs):
            if Path(d, "hold").exists():
                Path(d, "received").touch()
                while Path(d, "hold").exists():
                    time.sleep(0.01)
            return super()._answer(*args, **kwargs)

    return HoldingGenerator


if __name__ == "__main__":
    import rayrag.serving.app as app

    app.Generator = holding_generator(sys.argv[1])
    from rayrag.cli.main import main

    sys.exit(main(sys.argv[2:]))
