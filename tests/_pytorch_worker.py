"""One rank of a gloo group that retrieves through the `pytorch` backend (run by test_backends.py).

    python _pytorch_worker.py RANK WORLD PORT KB_DIR QUERIES.npz OUT.npz

QUERIES.npz holds `rank{R}_call{C}` arrays: rank R's queries in call C (ranks may differ in size,
and may have none). Writes ids, scores, vectors and texts of every call to OUT.npz.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch.distributed as dist


def main() -> None:
    rank, world, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    kb_dir, queries_file, out = sys.argv[4], sys.argv[5], sys.argv[6]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from rayrag.retrieval.pytorch import TorchSpec

    backend = TorchSpec(kb=kb_dir).connect()
    data = np.load(queries_file)
    calls = sorted(int(name.split("call")[1]) for name in data.files if name.startswith(f"rank{rank}_"))
    result = {}
    for c in calls:
        r = backend.retrieve(data[f"rank{rank}_call{c}"], int(data["k"]))
        scores, ids = backend.search(data[f"rank{rank}_call{c}"], int(data["k"]))
        assert np.array_equal(ids, r.ids) and np.array_equal(scores, r.scores)
        result.update({f"ids{c}": r.ids, f"scores{c}": r.scores, f"vectors{c}": r.vectors,
                       f"texts{c}": np.array(json.dumps(r.texts))})
    np.savez(out, backend_rank=backend.rank, **result)
    backend.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
