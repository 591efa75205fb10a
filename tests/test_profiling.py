"""`jaxrec.profiling.profile` writes a jax.profiler trace (TensorBoard xplane + Perfetto json)."""

import jax
import jax.numpy as jnp

from jaxrec.profiling import profile, trace_files


def test_profile_writes_trace(tmp_path):
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    with profile(tmp_path / "prof") as where:
        with jax.profiler.StepTraceAnnotation("step", step_num=0):
            jax.block_until_ready(f(jnp.ones((32, 32))))
    assert where == tmp_path / "prof"
    traces = trace_files(where)
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert list(traces[0].parent.glob("*.trace.json.gz"))


def test_profile_none_is_a_no_op(tmp_path):
    """``profile(None)`` starts no trace (one can still be started inside it) and writes nothing."""
    with profile(None) as where:
        jax.profiler.start_trace(str(tmp_path / "mine"))  # raises if a trace were already running
        jax.profiler.stop_trace()
    assert where is None and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
