"""Fault injection for the Ray pool's tests: retrieval actors that hold what they do while the test says so.

`holding_actor(DIR)` is a `RetrievalActor` subclass. Actor I:
- while DIR/hold-I exists, writes DIR/received-I when a call arrives and holds the call, so a test knows a call is
  inside the actor (an event the actor sets) before it kills or stops it;
- while DIR/start-I exists, writes DIR/starting-I as it starts (a restart, after a kill) and waits, so a test knows
  the actor is restarting, and for as long as it wants.

The test puts it in the pool's place: `use_holding_actors(DIR)` in its own process (pytest's `monkeypatch` undoes
it), or, for the real command line in a child process, `python tests/_holding_actor.py DIR VERB ARGS...`, which is
`rayrag VERB ARGS...` with holding actors. Production code knows nothing of it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def holding_actor(hold_dir: str | Path) -> type:
    """The `RetrievalActor` subclass that holds calls and starts as the files in `hold_dir` say (see above)."""
    from rayrag.retrieval.ray.actor import RetrievalActor

    d = str(hold_dir)

    def wait_while(flag: str, event: str) -> None:
        if Path(d, flag).exists():
            Path(d, event).touch()
            while Path(d, flag).exists():
                time.sleep(0.01)

    # Defined in this function, so that Ray ships it to its workers by value: they need not import this file.
    class HoldingRetrievalActor(RetrievalActor):
        def __init__(self, *args, index: int = 0, **kwargs):
            wait_while(f"start-{index}", f"starting-{index}")
            super().__init__(*args, index=index, **kwargs)

        def _call(self, kind, payload, k, *rest):
            wait_while(f"hold-{self.index}", f"received-{self.index}")
            return super()._call(kind, payload, k, *rest)

    return HoldingRetrievalActor


def use_holding_actors(hold_dir: str | Path, monkeypatch=None) -> None:
    """Pools created in this process from now on have holding actors (undone by `monkeypatch` if given)."""
    import rayrag.retrieval.ray.pool as pool

    if monkeypatch is not None:
        monkeypatch.setattr(pool, "RetrievalActor", holding_actor(hold_dir))
    else:
        pool.RetrievalActor = holding_actor(hold_dir)


if __name__ == "__main__":
    use_holding_actors(sys.argv[1])
    from rayrag.cli.main import main

    sys.exit(main(sys.argv[2:]))
