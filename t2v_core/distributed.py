"""Batch generation on a Ray cluster: one actor per GPU (per share of the CPUs on a cluster without GPUs), each
holding a loaded pipeline, fed by Ray's ``ActorPool``. Ray is imported here only, when ``--ray`` asks for it.

A worker that dies (its process killed, its machine gone) is restarted by Ray, which runs the jobs it held again;
its results never reach the driver, so each video is written once, by the driver (``batch.Writer``).
"""
import logging
from pathlib import Path

from .batch import Worker

log = logging.getLogger(__name__)

RETRIES = 3  # tries of a job beyond the first when its worker dies; a job that kills every worker is given up


def connect(address):
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` started on this machine)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'ray>=2.9' (or the pack's [ray] extra)") from None
    try:
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(__file__).parent)]})
    except ConnectionError as e:
        raise ValueError(f"no Ray cluster at --ray {address} ({e}); start one with `ray start --head`; set "
                         "RAY_AUTH_MODE=token if it uses token authentication (docs/batch-and-ray.md)") from None
    return ray


def worker_resources(ray, workers=None):
    """``(workers, actor options)``: one worker per GPU by default; on a cluster without GPUs one per machine,
    each reserving its share of the cluster's CPUs (and using as many threads)."""
    total = ray.cluster_resources()
    if total.get("GPU", 0) >= 1:
        return workers or int(total["GPU"]), {"num_gpus": 1, "num_cpus": 1}
    workers = workers or len([node for node in ray.nodes() if node["Alive"]])
    return workers, {"num_cpus": max(1, int(total.get("CPU", 1)) // workers)}


def ray_results(jobs, address, workers=None, **worker_options):
    """``(file, result)`` for each job as the cluster's workers finish them, in any order."""
    ray = connect(address)
    from ray.util.actor_pool import ActorPool

    count, options = worker_resources(ray, workers)
    remote = ray.remote(Worker).options(max_restarts=-1, max_task_retries=RETRIES, **options)
    threads = None if "num_gpus" in options else options["num_cpus"]
    actors = [remote.remote(threads=threads, **worker_options) for _ in range(count)]
    log.info("%d Ray workers (%s each) for %d videos", count, options, len(jobs))
    try:
        ray.get([actor.ready.remote() for actor in actors])
    except ray.exceptions.RayError as e:  # the remote traceback's last line names the error (a missing checkpoint)
        raise ValueError(f"the Ray workers could not load the pipeline: {str(e).strip().splitlines()[-1]}") from None
    pool = ActorPool(actors)
    for job in jobs:
        pool.submit(lambda actor, job: actor.run.remote(job), job)
    while pool.has_next():
        try:
            yield pool.get_next_unordered()
        except ray.exceptions.RayError as e:  # its worker died on every try, or raised (named at the end)
            log.error("a video was not made: %s", e)
