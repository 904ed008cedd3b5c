"""fastgrad.distributed on a local Ray (2 CPUs, no dashboard): N workers equal one process, killed workers
are replaced, checkpoints resume exactly, sweeps over the digits model.

Oracles: the same shards summed in this process without Ray (``local=True``: the same bits), a plain eager
training loop written here (1e-12), the least-squares gradient written out with NumPy, and PyTorch (where
installed). Tests needing Ray skip without it; the ImportError test runs everywhere.
"""
import math
import os
import pickle
import sys

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.optim import lr_scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fg.__file__)))
N, BATCH, EPOCHS = 22, 8, 2          # 3 steps per epoch (8, 8, 6 rows): uneven shards on 2 workers
STEPS = EPOCHS * math.ceil(N / BATCH)


# ---- the model and data of most tests ----

def make_model(seed=1):
    rng = __import__("random").Random(seed)
    return fg.nn.Sequential(fg.nn.Linear(3, 4, rng=rng), fg.nn.Tanh(), fg.nn.Linear(4, 2, rng=rng))


def squared_error(model, x, y):
    """One sample's loss: the squared error summed over the 2 outputs."""
    return fg.sum([(out - t) ** 2 for out, t in zip(model(x), y)])


def branching_loss(model, x, y):
    """Not traceable (a Python `if` on a value raises fg.TraceError), so the workers fall back to eager."""
    if y[0] > 100:      # eager mode sees numbers: a data-dependent error of the user's code
        raise KeyError("label out of range")
    out = model(x)
    first = out[0] if out[0] > 0 else -out[0]
    return (first - y[0]) ** 2 + (out[1] - y[1]) ** 2


DATA_RNG = np.random.default_rng(7)
X = DATA_RNG.normal(size=(N, 3))
Y = DATA_RNG.normal(size=(N, 2))


def batches(seed=0):
    """fit's documented batch order: epoch e visits default_rng([seed, e]).permutation(n) in slices."""
    for epoch in range(EPOCHS):
        order = np.random.default_rng([seed, epoch]).permutation(N)
        for k in range(0, N, BATCH):
            yield order[k:k + BATCH]


def values(model):
    return np.array([p.data for p in model.parameters()])


# (optimizer, scheduler) pairs: every optimizer, and the schedulers spread over them
CASES = {
    "sgd-nesterov-steplr": (lambda p: fg.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                                   weight_decay=0.01),
                            lambda o: lr_scheduler.StepLR(o, step_size=2, gamma=0.5)),
    "adagrad-exponential": (lambda p: fg.optim.Adagrad(p, lr=0.1, lr_decay=0.01),
                            lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9)),
    "rmsprop-cosine": (lambda p: fg.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
                       lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=4)),
    "adam-onecycle": (lambda p: fg.optim.Adam(p, lr=0.01, amsgrad=True),
                      lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=STEPS)),
    "adamw-plateau": (lambda p: fg.optim.AdamW(p, lr=0.02, weight_decay=0.1),
                      lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5)),
    "sgd-sequential": (lambda p: fg.optim.SGD(p, lr=0.05),
                       lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.5, total_iters=2),
                                                               lr_scheduler.MultiStepLR(o, [4])], [2])),
}


def plain_run(case, steps=STEPS):
    """One process, no fastgrad.distributed: eager graphs, the batch mean, one step per batch."""
    make_opt, make_sched = CASES[case]
    model = make_model()
    opt = make_opt(model.parameters())
    sched = make_sched(opt)
    for rows in list(batches())[:steps]:
        opt.zero_grad()
        loss = fg.sum([squared_error(model, list(X[i]), list(Y[i])) for i in rows]) / len(rows)
        loss.backward()
        opt.step()
        sched.step(loss.data) if isinstance(sched, lr_scheduler.ReduceLROnPlateau) else sched.step()
    return model, opt


# ---- without Ray ----

def test_import_without_ray_names_the_extra():
    from conftest import run_python
    out = run_python("import sys\nsys.modules['ray'] = None\ntry:\n    import fastgrad.distributed\n"
                     "except ImportError as e:\n    print('ImportError:', e)\n")
    assert "ImportError:" in out and "fastgrad[distributed]" in out


# ---- Ray ----

# NOTE: Ray starts its processes with subprocess and a preexec_fn, which runs the interpreter's at-fork
# handlers. JAX (imported by earlier tests in the same process, for its jax.jit rows) warns from its handler
# that forking a multithreaded process may deadlock; the forked child only execs Ray's own binaries, so the
# warning does not concern these tests, and under `-W error` it would fail them.
pytestmark = pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")

@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    # NOTE: the workers import fastgrad (and this module's functions, pickled by value) like the tests do
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_session):
    """Two replica actors shared by the tests (no CPUs reserved, so the sweep's tasks still get both)."""
    from fastgrad.distributed import GradientWorkers
    workers = GradientWorkers(make_model, squared_error, 2, cpus_per_worker=0)
    yield workers
    workers.shutdown()


def trainer(case, workers, **kwargs):
    from fastgrad.distributed import DataParallel
    make_opt, make_sched = CASES[case]
    return DataParallel(make_model(), squared_error, make_opt, scheduler=make_sched, workers=workers,
                        **kwargs)


def test_gradient_is_the_sum_of_per_sample_gradients_written_out(pool):
    from fastgrad.distributed import GradientWorkers
    assert pool.modes() == ["compiled (fg.vmap)"] * 2
    # a linear model, where the gradient of Σ_i (w·x_i + b - y_i)² has a closed form
    linear = fg.nn.Linear(3, 1, rng=__import__("random").Random(3))
    loss = lambda m, x, y: (m(x) - y) ** 2  # noqa: E731
    with GradientWorkers(linear, loss, 2, cpus_per_worker=0) as workers:
        w, b = np.array([0.5, -1.0, 2.0]), 0.25
        total, grad = workers.gradient(np.append(w, b), X, Y[:, 0], step=1)
        r = X @ w + b - Y[:, 0]
        np.testing.assert_allclose(total, np.sum(r ** 2), rtol=1e-13)
        np.testing.assert_allclose(grad, np.append(2 * r @ X, 2 * r.sum()), rtol=1e-12, atol=1e-13)
        local = GradientWorkers(linear, loss, 2, local=True).gradient(np.append(w, b), X, Y[:, 0])
        assert local[0] == total and np.array_equal(local[1], grad)


def test_gradient_rows_reads_the_data_it_was_last_given(ray_session, pool, monkeypatch):
    """The replicas keep the data of gradient_rows between calls: other data must replace it, and the
    parameters must arrive whole whether inline in the call or through the object store."""
    from fastgrad.distributed import GradientWorkers, workers as workers_module
    ray = ray_session
    params = values(make_model())
    rows = np.array([5, 0, 21, 3, 3])
    local = GradientWorkers(make_model, squared_error, 2, local=True)
    X2, Y2 = X[::-1] * 2.0, Y + 1.0
    for data_x, data_y in ((X, Y), (X2, Y2), (X, Y)):
        want = local.gradient(params, data_x[rows], data_y[rows])
        for inline in (True, False):
            monkeypatch.setattr(workers_module, "_INLINE_BYTES", 10 ** 9 if inline else 0)
            for got in (pool.gradient_rows(params, rows, [ray.put(data_x), ray.put(data_y)]),
                        pool.gradient_rows(params, rows, [data_x, data_y]),
                        local.gradient_rows(params, rows, [data_x, data_y])):
                assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert local.gradient(params, X2[rows], Y2[rows])[0] != want[0], "the two data sets differ"
    # plain arrays may change in place between calls: they are sent again, never kept
    changed = X.copy()
    before = pool.gradient_rows(params, rows, [changed, Y])
    changed *= 3.0
    for workers in (pool, local):
        got = workers.gradient_rows(params, rows, [changed, Y])
        want = local.gradient(params, changed[rows], Y[rows])
        assert got[0] == want[0] != before[0] and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_workers_equal_one_process(pool, case):
    from fastgrad.distributed import GradientWorkers
    ray_run = trainer(case, pool)
    losses = ray_run.fit(X, Y, batch_size=BATCH, epochs=EPOCHS)
    assert len(losses) == ray_run.step_count == STEPS
    # the same shards summed in this process: the same bits
    same_shards = trainer(case, GradientWorkers(make_model, squared_error, 2, local=True))
    assert same_shards.fit(X, Y, batch_size=BATCH, epochs=EPOCHS) == losses
    assert np.array_equal(values(same_shards.model), values(ray_run.model))
    # one worker (one sum per batch) and a plain eager loop: equal to rounding
    one_worker = trainer(case, 1, local=True)
    one_worker.fit(X, Y, batch_size=BATCH, epochs=EPOCHS)
    plain, plain_opt = plain_run(case)
    for other in (values(one_worker.model), values(plain)):
        np.testing.assert_allclose(values(ray_run.model), other, rtol=1e-12, atol=1e-12)
    lr = plain_opt.param_groups[0]["lr"]
    assert ray_run.optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-12)
    assert not np.array_equal(values(plain), values(make_model())), "training moved the parameters"


def test_two_workers_equal_torch(pool):
    torch = pytest.importorskip("torch")
    ray_run = trainer("adam-onecycle", pool)
    ray_run.fit(X, Y, batch_size=BATCH, epochs=EPOCHS)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    net.load_state_dict({k: torch.tensor(v, dtype=torch.float64)
                         for k, v in make_model().state_dict().items()})
    opt = torch.optim.Adam(net.parameters(), lr=0.01, amsgrad=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS)
    xs, ys = torch.tensor(X), torch.tensor(Y)
    for rows in batches():
        opt.zero_grad()
        ((net(xs[rows]) - ys[rows]) ** 2).sum(1).mean().backward()
        opt.step()
        sched.step()
    for key, value in ray_run.model.state_dict().items():
        np.testing.assert_allclose(np.array(value), net.state_dict()[key].numpy(), rtol=1e-10, atol=1e-12)


def wait_until_dead(ray, actor):
    """ray.kill is asynchronous: poll until calls fail, so the next step surely meets a dead worker."""
    for _ in range(500):
        try:
            ray.get(actor.ready.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
    raise AssertionError("the killed actor still answers")


def test_killed_workers_are_replaced_and_the_run_is_unchanged(ray_session, pool):
    ray = ray_session
    uninterrupted = trainer("adam-onecycle", pool)
    uninterrupted.fit(X, Y, batch_size=BATCH, epochs=EPOCHS)

    def kill(run, loss):
        if run.step_count in (1, 3):        # after step 1 the first worker, after step 3 the second
            actor = run.workers.workers[run.step_count // 2]
            ray.kill(actor)
            wait_until_dead(ray, actor)

    replaced = pool.replacements
    killed = trainer("adam-onecycle", pool)
    losses = killed.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, callback=kill)
    assert pool.replacements - replaced == 2
    assert len(losses) == STEPS
    assert np.array_equal(values(killed.model), values(uninterrupted.model))


def test_a_worker_that_cannot_be_kept_alive_names_the_step(ray_session):
    from fastgrad.distributed import DataParallel, WorkerLostError
    ray = ray_session
    run = DataParallel(make_model(), squared_error, lambda p: fg.optim.SGD(p, lr=0.1), workers=1,
                       max_retries=0)
    try:
        run.fit(X, Y, batch_size=BATCH, epochs=1)
        before = values(run.model)

        ray.kill(run.workers.workers[0])
        wait_until_dead(ray, run.workers.workers[0])
        with pytest.raises(WorkerLostError, match=r"step 4 failed.*retried 0 time") as info:
            run.step(X[:4], Y[:4])
        assert info.value.step == 4 and run.step_count == 3
        assert np.array_equal(values(run.model), before), "nothing was applied"
        run.workers.max_retries = 2             # recovery allowed again: the same step now succeeds
        run.step(X[:4], Y[:4])
        assert run.step_count == 4 and run.workers.replacements == 1
    finally:
        run.shutdown()


def test_user_errors_are_not_retried(pool):
    with pytest.raises(ValueError, match="26 parameter values, got shape"):
        pool.gradient(np.zeros(3), X, Y)


def test_workers_that_cannot_start_are_an_error_not_a_hang(ray_session):
    from fastgrad.distributed import GradientWorkers
    with pytest.raises(RuntimeError, match="did not start within 0.5 s.*cpus_per_worker=2"):
        GradientWorkers(make_model, squared_error, 2, cpus_per_worker=2, start_timeout=0.5)


def test_untraceable_loss_falls_back_to_eager_and_its_errors_propagate(ray_session):
    from fastgrad.distributed import GradientWorkers
    params = values(make_model())
    with GradientWorkers(make_model, branching_loss, 1, cpus_per_worker=0) as workers:
        total, grad = workers.gradient(params, X, Y)
        assert workers.modes() == ["eager (the loss does not trace: fg.TraceError)"]
        # the user's own exception comes back with its type and is not mistaken for a lost worker
        with pytest.raises(KeyError, match="label out of range"):
            workers.gradient(params, X, Y + 1000.0, step=5)
        assert workers.replacements == 0
    model = make_model()
    loss = fg.sum([branching_loss(model, list(x), list(y)) for x, y in zip(X, Y)])
    loss.backward()
    assert total == pytest.approx(loss.data, rel=1e-14)
    np.testing.assert_allclose(grad, [p.grad for p in model.parameters()], rtol=1e-13, atol=1e-15)


def test_checkpoints_resume_to_the_uninterrupted_result(pool, tmp_path):
    from fastgrad.distributed import latest_checkpoint, load_checkpoint
    uninterrupted = trainer("adamw-plateau", pool)
    uninterrupted.fit(X, Y, batch_size=BATCH, epochs=EPOCHS)

    class Crash(Exception):
        pass

    def crash_after_step_5(run, loss):
        if run.step_count == 5:
            raise Crash
    first = trainer("adamw-plateau", pool, checkpoint_dir=str(tmp_path), checkpoint_every=2,
                    keep_checkpoints=1)
    with pytest.raises(Crash):
        first.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, callback=crash_after_step_5)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-000000004.pkl"], "one kept, no temporary file left"
    assert load_checkpoint(str(tmp_path))["step"] == 4
    resumed = trainer("adamw-plateau", pool, checkpoint_dir=str(tmp_path), resume=True)
    assert resumed.resumed_from == latest_checkpoint(str(tmp_path)) and resumed.step_count == 4
    assert len(resumed.fit(X, Y, batch_size=BATCH, epochs=EPOCHS)) == STEPS - 4
    assert np.array_equal(values(resumed.model), values(uninterrupted.model))
    assert resumed.scheduler.state_dict() == uninterrupted.scheduler.state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        resumed.fit(X, Y, batch_size=BATCH + 1, epochs=EPOCHS + 1)


def test_checkpoints_refuse_code(tmp_path):
    pytest.importorskip("ray")
    from fastgrad.distributed import load_checkpoint, save_checkpoint
    marker = tmp_path / "ran"
    evil = tmp_path / "checkpoint-000000009.pkl"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    evil.write_bytes(pickle.dumps({"step": 9, "x": Payload()}))
    with pytest.raises(ValueError, match=r"refers to (io|builtins)\.open"):
        load_checkpoint(str(tmp_path))
    assert not marker.exists()
    with pytest.raises(TypeError, match="plain values"):
        save_checkpoint(str(tmp_path), {"step": 1, "x": np.float64(1.0)})
    with pytest.raises(TypeError, match="step"):
        save_checkpoint(str(tmp_path), {"x": 1})


def test_bad_arguments_are_errors_in_the_users_terms(pool, tmp_path):
    from fastgrad.distributed import DataParallel, GradientWorkers, grid
    with pytest.raises(ValueError, match="argument 1 has 3 samples"):
        pool.gradient(values(make_model()), X, Y[:3])
    with pytest.raises(TypeError, match="real numbers"):
        pool.gradient(values(make_model()), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="not a parameter of the model"):
        DataParallel(make_model(), squared_error, fg.optim.SGD([fg.Var(1.0)], lr=0.1), workers=pool)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        DataParallel(make_model(), squared_error, lambda p: fg.optim.SGD(p, lr=0.1), workers=pool,
                     checkpoint_every=2)
    with pytest.raises(FileNotFoundError):
        DataParallel(make_model(), squared_error, lambda p: fg.optim.SGD(p, lr=0.1), workers=pool,
                     resume=str(tmp_path))
    with pytest.raises(ValueError, match="26 parameters, this model has 3"):
        DataParallel(fg.nn.Linear(2, 1), squared_error, lambda p: fg.optim.SGD(p, lr=0.1), workers=pool)
    with pytest.raises(TypeError, match="Module"):
        GradientWorkers(42, squared_error, local=True)
    with pytest.raises(ValueError, match="num_workers"):
        GradientWorkers(make_model, squared_error, 0, local=True)
    with pytest.raises(ValueError, match="no values"):
        grid(lr=[])


def test_sweep_over_the_digits_model(ray_session):
    pytest.importorskip("sklearn")
    from fastgrad.distributed import grid, results_table, sweep
    from fastgrad.distributed.digits import digits_trial
    configs = grid(lr=[0.003, 0.03], hidden=[(16,)], epochs=[2], batch_size=[128])
    rows = sweep(digits_trial, configs, metric="test_accuracy")
    assert [r["trial"] for r in rows] == [1, 0], "the larger step size learns more in 2 epochs"
    assert all(0.1 < r["test_accuracy"] <= 1.0 for r in rows)
    assert all(r["parameters"] == 64 * 16 + 16 + 16 * 10 + 10 for r in rows)
    assert rows[0] == {**rows[0], **digits_trial(configs[1]), "seconds": rows[0]["seconds"]}, "deterministic"
    table = results_table(rows, ["trial", "lr", "hidden", "test_accuracy"])
    assert table.splitlines()[0] == "| trial | lr | hidden | test_accuracy |"
    assert "| 1 | 0.03 | (16,) |" in table

    def fails_on_small_lr(config):
        if config["lr"] < 0.01:
            raise ValueError("diverged")
        return {"score": config["lr"]}
    rows = sweep(fails_on_small_lr, configs, metric="score")
    assert rows[0]["score"] == 0.03 and rows[1]["error"] == "ValueError: diverged"
