"""fastconv in forked processes: never hangs, same results, threads kept.

GNU libgomp's team does not survive fork(): a child whose forking thread had
run a parallel region waits forever in its next one unless fastconv routes
it (fastconv/_runtime.py, run_kernel). Each scenario runs in a subprocess
with a timeout, and every forked child under an alarm with the default
action, so a hang fails in seconds instead of stalling the suite.
"""
import subprocess
import sys
import textwrap

import pytest

import fastconv

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")

PRELUDE = textwrap.dedent('''
    import multiprocessing as mp, os, signal, sys, threading
    import numpy as np
    import fastconv
    from fastconv import _runtime

    def work(threads):
        """Every public kind of call, with `threads` threads."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 8, 20, 20)).astype(np.float32)
        w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
        conv = dict(padding=1, num_threads=threads)
        y = fastconv.conv2d(x, w, **conv)
        g = np.cos(y)
        out = [y, fastconv.conv2d_input_grad(x.shape, w, g, **conv),
               fastconv.conv2d_weight_grad(x, w.shape, g, **conv),
               fastconv.conv_transpose2d(y, w, **conv),
               fastconv.im2col(x, 3, **conv), fastconv.conv1d(x[:, :, 0], w[:, :, 0], **conv)]
        out.append(fastconv.col2im(out[4], x.shape, 3, **conv))
        return out

    def same(a, b):
        return all(np.array_equal(p, q) for p, q in zip(a, b))

    THREADS = (None, 1, 2)

    def in_child(body):
        """Run body() in an os.fork child under a 60 s alarm; its exit status."""
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(60)
            code = 1
            try:
                code = 0 if body() else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return "hang (killed by signal %d)" % os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    if __name__ == "__main__":
        parent = {t: work(t) for t in THREADS}   # the parent's main thread runs teams
''')


def run(body, tmp_path, timeout=120):
    """Run PRELUDE + body as a script file (spawned pool workers re-import it
    by path; the body runs only in the main process)."""
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + textwrap.indent(textwrap.dedent(body), "    "))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=timeout, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_fork_child_and_grandchild_compute_the_parents_results(tmp_path):
    out = run('''
        def child():
            ok = all(same(work(t), parent[t]) for t in THREADS)
            # the 2-thread calls of the forking thread went through the helper
            ok = ok and _runtime._helper is not None
            grandchild = in_child(lambda: all(same(work(t), parent[t]) for t in THREADS))
            return ok and grandchild == 0
        print("child", in_child(child))
        print("parent after", all(same(work(t), parent[t]) for t in THREADS))
    ''', tmp_path)
    assert "child 0" in out and "parent after True" in out, out


def test_fork_from_a_thread_that_ran_a_team(tmp_path):
    out = run('''
        box = []
        def fork_here():
            work(2)   # this thread owns a team, then forks
            box.append(in_child(lambda: all(same(work(t), parent[t]) for t in THREADS)))
        t = threading.Thread(target=fork_here)
        t.start(); t.join()
        print("status", box[0])
    ''', tmp_path)
    assert "status 0" in out, out


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_pools_of_every_start_method(method, tmp_path):
    out = run(f'''
        with mp.get_context({method!r}).Pool(2) as pool:
            results = pool.map(work, THREADS * 2, chunksize=1)
        print("equal", all(same(r, parent[t]) for r, t in zip(results, THREADS * 2)))
        print("parent after", all(same(work(t), parent[t]) for t in THREADS))
    ''', tmp_path)
    assert "equal True" in out and "parent after True" in out, out


def test_a_call_in_the_child_uses_its_threads(tmp_path):
    # the helper thread's team really has two threads: the kernel runs in
    # threads other than the caller (the helper and its OpenMP worker)
    out = run('''
        def child():
            work(2)
            names = {t.name for t in threading.enumerate()}
            return "fastconv-kernels" in names
        print("status", in_child(child))
    ''', tmp_path)
    assert "status 0" in out, out
