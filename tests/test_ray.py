"""The ray backend on the session's Ray: dead actors, hung tasks, errors, resources, lifecycle.

The shared pipeline suite (test_pipeline.py) runs on ray too; these are the parts only
the ray backend has. Every context here asks for half a CPU per worker so that it fits
next to the shared one on the session's 2-CPU Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import ray

from helpers import WORKER_START_MARKER, clock_jumps_per_marker, hang_once
from zephyr_arrow import Dataset, PlanError, ShardFailedError, ZephyrContext, ZephyrError, counters

pytestmark = pytest.mark.usefixtures("ray_session")


def ray_context(tmp_path, **options) -> ZephyrContext:
    options = {"max_workers": 2, "num_cpus_per_worker": 0.5, **options}
    return ZephyrContext(backend="ray", chunk_storage_prefix=str(tmp_path / "chunks"), **options)


def _die_once(marker_dir: str, how: str):
    def run(x):
        counters.increment("rows")
        marker = os.path.join(marker_dir, f"died-{x}")
        if x == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            if how == "ray.kill":
                ray.kill(ray.get_runtime_context().current_actor)
            os._exit(3)
        return x * 10

    return run


@pytest.mark.parametrize("how", ["ray.kill", "os._exit"])
def test_actor_dying_mid_stage_is_replaced_and_the_run_completes(tmp_path, how):
    markers = tmp_path / "markers"
    markers.mkdir()
    with ray_context(tmp_path) as ctx:
        ds = Dataset.from_list(list(range(6)), num_shards=6).map(_die_once(str(markers), how))
        refs = ctx.execute(ds.reshard(2).map(lambda x: x + 1))
        assert refs.to_pylist() == [x * 10 + 1 for x in range(6)]
        assert refs.counters == {"rows": 6}  # the dead attempt's counts never arrive
    assert os.listdir(markers) == ["died-2"]


def _segfault_once(marker_dir: str):
    def run(x):
        marker = os.path.join(marker_dir, f"crashed-{x}")
        if x == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            import ctypes

            ctypes.string_at(0)  # a real segmentation fault, as a crashing C extension would cause
        return x * 10

    return run


def test_actor_killed_by_a_segfault_is_replaced_and_its_task_retried(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with ray_context(tmp_path) as ctx:
        assert ctx.execute(Dataset.from_list([0, 1, 2], num_shards=3).map(_segfault_once(str(markers)))).to_pylist() == [0, 10, 20]
    assert os.listdir(markers) == ["crashed-1"]


def test_only_the_accepted_attempts_chunk_is_in_the_output(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with ray_context(tmp_path) as ctx:
        refs = ctx.execute(Dataset.from_list(list(range(4)), num_shards=4).map(_die_once(str(markers), "ray.kill")))
        assert [c.path.rsplit("-", 1)[-1] for c in refs.shards[2]] == ["1.parquet"]


def _always_die(x):
    if x == 1:
        ray.kill(ray.get_runtime_context().current_actor)
        threading.Event().wait()  # ray.kill is asynchronous: never return a result before it lands
    return x


def test_task_that_always_kills_its_actor_aborts_the_run(tmp_path):
    with ray_context(tmp_path, max_worker_deaths=2) as ctx:
        with pytest.raises(ShardFailedError) as error:
            ctx.execute(Dataset.from_list([0, 1, 2]).map(_always_die))
        message = str(error.value)
        assert "shard 1 of 3: worker died 2 times" in message and "killed by `ray.kill`" in message
        assert os.listdir(tmp_path / "chunks") == []
        # The context stays usable: dead actors are replaced.
        assert ctx.execute(Dataset.from_list([5, 6]).map(lambda x: x + 1)).to_pylist() == [6, 7]


def test_hung_task_past_timeout_is_killed_and_retried(tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    clock_jumps_per_marker(monkeypatch, str(markers), seconds=120)
    # One worker: no other task runs while the clock jumps; a death more would fail the run.
    with ray_context(tmp_path, max_workers=1, task_timeout=60.0, max_worker_deaths=2) as ctx:
        assert ctx.execute(Dataset.from_list([0, 1, 2]).map(hang_once(str(markers)))).to_pylist() == [0, 1, 2]
    assert os.listdir(markers) == ["hung-0"]


def test_actor_start_up_does_not_count_against_the_task_timeout(tmp_path, monkeypatch):
    # Each actor's process start moves the clock past the timeout (a marker file per start); so does the hang.
    markers = tmp_path / "markers"
    markers.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WORKER_START_MARKER)
    python_path = os.pathsep.join([str(site), os.path.dirname(os.path.abspath(__file__))])
    env_vars = {"PYTHONPATH": python_path, "ZEPHYR_TEST_START_MARKERS": str(markers)}
    clock_jumps_per_marker(monkeypatch, str(markers), seconds=120)
    # One death allowed beyond the hang: the retry runs on a replacement actor whose start
    # moves the clock again, and would be timed out too if its start-up counted.
    options = {"max_workers": 1, "task_timeout": 60.0, "max_worker_deaths": 2, "runtime_env": {"env_vars": env_vars}}
    with ray_context(tmp_path, **options) as ctx:
        assert ctx.execute(Dataset.from_list([0, 1, 2, 3], num_shards=4).map(hang_once(str(markers)))).to_pylist() == [0, 1, 2, 3]
    names = sorted(name.split("-")[0] for name in os.listdir(markers))
    assert names[0] == "hung" and names[1:] == ["started"] * (len(names) - 1) and len(names) >= 3


class Abort(BaseException):
    """Not an Exception: escapes the worker's handler and comes back as Ray's RayTaskError."""


def _abort(x):
    if x == 1:
        raise Abort(f"stop at {x}")
    return x


def _explode(x):
    if x == 1:
        raise ValueError(f"bad row {x}")
    return x


@pytest.mark.parametrize(
    "fn, raised, summary", [(_explode, ValueError, "ValueError: bad row 1"), (_abort, Abort, "Abort: stop at 1")]
)
def test_user_exception_names_shard_and_chains_the_original(tmp_path, fn, raised, summary):
    with ray_context(tmp_path) as ctx:
        with pytest.raises(ShardFailedError) as error:
            ctx.execute(Dataset.from_list([0, 1, 2]).map(fn))
    message = str(error.value)
    assert f"shard 1 of 3: raised {summary}" in message
    assert type(error.value.__cause__) is raised
    assert "test_ray.py" in message and "\x1b[" not in message  # the worker's traceback, without colours


def test_unpicklable_function_is_a_plan_error(tmp_path):
    import threading

    lock = threading.Lock()
    with ray_context(tmp_path) as ctx:
        with pytest.raises(PlanError, match="cannot be sent to worker processes"):
            ctx.execute(Dataset.from_list([1]).map(lambda x: (lock, x)[1]))


def _whoami(_):
    context = ray.get_runtime_context()
    return {"pid": os.getpid(), "actor": context.get_actor_id(), **context.get_assigned_resources()}


def test_actors_are_long_lived_and_reserve_the_resources_asked_for(tmp_path):
    with ray_context(tmp_path, memory_per_worker=64 * 1024 * 1024) as ctx:
        first = ctx.execute(Dataset.from_list(list(range(8))).map(_whoami)).to_pylist()
        second = ctx.execute(Dataset.from_list(list(range(8))).map(_whoami).reshard(2).map(lambda r: r)).to_pylist()
    first_actors, second_actors = {r["actor"] for r in first}, {r["actor"] for r in second}
    # 8 + 8 + 2 tasks on at most 2 actors, some of them in both runs. (A stage starts as soon
    # as one actor is up, so a short one may finish before the second is.)
    assert len(first_actors | second_actors) <= 2 and first_actors & second_actors
    assert os.getpid() not in {r["pid"] for r in first + second}
    assert {(r["CPU"], r["memory"]) for r in first} == {(0.5, 64 * 1024 * 1024)}


def test_max_workers_defaults_to_what_the_cluster_has_cpus_for(tmp_path):
    cpus = ray.cluster_resources()["CPU"]  # 2 on the session's Ray, whatever this machine has
    with ray_context(tmp_path, max_workers=None, num_cpus_per_worker=0.25) as ctx:
        assert ctx.max_workers == int(cpus / 0.25) == 8
        assert ctx.execute(Dataset.from_list([1, 2], num_shards=2).map(lambda x: x * 3)).to_pylist() == [3, 6]
    with ray_context(tmp_path, max_workers=None, num_cpus_per_worker=0) as ctx:
        assert ctx.max_workers == int(cpus) == 2


def test_actor_that_cannot_start_is_a_clear_error(tmp_path):
    # As on a node without the dependencies: zephyr_arrow imports pyarrow, which fails.
    broken = tmp_path / "broken" / "pyarrow"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('pyarrow is not installed here')\n")
    runtime_env = {"env_vars": {"PYTHONPATH": str(broken.parent)}}
    with ray_context(tmp_path, runtime_env=runtime_env) as ctx:
        with pytest.raises(ZephyrError, match="(?s)Ray worker actor could not start.*runtime_env"):
            ctx.execute(Dataset.from_list([1]).map(lambda x: x))


_FAIL_REPLACEMENTS = """
import os, sys

class _NodeLost:
    # Once the test arms it, the next {failures} actor(s) to import the backend fail to start.
    def find_spec(self, name, path=None, target=None):
        if name != "zephyr_arrow.execution.backends.ray" or not os.path.exists("{markers}/armed"):
            return None
        failed = len([m for m in os.listdir("{markers}") if m.startswith("failed-")])
        if failed >= {failures}:
            return None
        open(f"{markers}/failed-{{failed}}", "w").close()
        raise ImportError("injected: the node went away while the actor was placed")

sys.meta_path.insert(0, _NodeLost())
"""


def _arm_and_die(marker_dir: str):
    def run(x):
        if x == 2 and not os.path.exists(os.path.join(marker_dir, "armed")):
            open(os.path.join(marker_dir, "armed"), "w").close()
            os._exit(3)
        return x * 10

    return run


@pytest.mark.parametrize("failures", [2, 3])
def test_a_replacement_actor_that_cannot_start_is_retried_twice(tmp_path, failures, caplog):
    markers, site = tmp_path / "markers", tmp_path / "site"
    markers.mkdir()
    site.mkdir()
    (site / "sitecustomize.py").write_text(_FAIL_REPLACEMENTS.format(markers=markers, failures=failures))
    python_path = os.pathsep.join(filter(None, [str(site), os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH")]))
    ds = Dataset.from_list(list(range(4)), num_shards=4).map(_arm_and_die(str(markers)))
    # One worker: the run goes on only once its replacement is up.
    with ray_context(tmp_path, max_workers=1, runtime_env={"env_vars": {"PYTHONPATH": python_path}}) as ctx:
        if failures == 3:  # the third start of the slot fails too: the run stops
            with pytest.raises(ZephyrError, match="(?s)Ray worker actor could not start.*the node went away"):
                ctx.execute(ds)
        else:
            assert ctx.execute(ds).to_pylist() == [0, 10, 20, 30]
    assert sorted(os.listdir(markers)) == ["armed", *(f"failed-{n}" for n in range(failures))]
    assert caplog.text.count("could not start") == 2


@pytest.mark.parametrize(
    "options, message",
    [({"num_cpus_per_worker": -1}, "num_cpus_per_worker must be a number >= 0, got -1"),
     ({"memory_per_worker": "1GB"}, "memory_per_worker must be a positive number of bytes, got '1GB'")],
)
def test_wrong_options_are_plan_errors(tmp_path, options, message):
    with ray_context(tmp_path, **options) as ctx:
        with pytest.raises(PlanError, match=message):
            ctx.execute(Dataset.from_list([1]))


def test_missing_ray_says_how_to_install(monkeypatch):
    from zephyr_arrow.execution.backends.ray import RayBackend

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'zephyr_arrow\[ray\]'"):
        RayBackend()


def test_importing_zephyr_arrow_does_not_import_ray():
    code = "import sys, zephyr_arrow; from zephyr_arrow import ZephyrContext; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


OWN_RAY_DRIVER = textwrap.dedent(
    """
    import sys, psutil, ray
    from zephyr_arrow import Dataset, ZephyrContext

    with ZephyrContext(backend="ray", max_workers=2, chunk_storage_prefix=sys.argv[1]) as ctx:
        assert ctx.execute(Dataset.from_list([1, 2, 3]).map(lambda x: x * 2)).to_pylist() == [2, 4, 6]
        started = psutil.Process().children(recursive=True)
        print(len(started), sorted({p.name() for p in started if p.name() in ("gcs_server", "raylet")}))
    print(ray.is_initialized(), [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE])
    """
)


def test_ray_started_by_the_backend_is_stopped_when_the_context_closes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", OWN_RAY_DRIVER, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    during, after = result.stdout.strip().splitlines()[-2:]
    assert during.endswith("['gcs_server', 'raylet']")  # it started a Ray of its own
    assert after == "False []"  # and nothing of it is left running
