"""Run a plan on a Ray cluster (`promptlab run --ray auto|local|HOST:PORT`).

The split of work keeps a Ray run's rows equal to a local run's:
- Ray actors only compute: each loads one model once (num_cpus = its n_threads, one GPU where
  layers are offloaded) and answers generations and choice scorings for chunks of cells.
- The driver does everything else with the runner's own code: it looks each cell up in the
  result cache, scores every row (make_row), and alone writes results.jsonl, the manifest and
  the cache. Checks that call the model (choice) find the actor's answers waiting for them;
  a judge that uses the model under test asks a live actor.

Sharding: a model's cells, in run order (plan.schedule puts prefix-sharing cells back to back),
are cut into one contiguous shard per actor, each cut moved to where neighbouring prompts share
the least text, so prefix reuse is lost only at the cuts. An idle actor takes the last queued
chunk of the busiest one.

Faults: a chunk is a unit: its rows are written only once it comes back whole. When an actor
dies, its unfinished chunks go back to its queue and a new actor takes its place (up to
MAX_RESPAWNS per slot), so no cell is lost and none is written twice.

Ray is an optional extra, imported (lazily, by cluster.import_ray) only when --ray is given:
`promptlab --help` and local runs never load it.
"""

from promptlab.engine.distributed.cluster import Cluster, check_address, connect, import_ray
from promptlab.engine.distributed.driver import execute_ray
from promptlab.engine.distributed.pool import shard

__all__ = ["Cluster", "check_address", "connect", "execute_ray", "import_ray", "shard"]
