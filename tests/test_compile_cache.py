"""The persistent compilation cache: a second process loads what the first compiled."""

import subprocess
import sys

PROGRAM = """
import sys, jax, jax.numpy as jnp, jax.monitoring
from jaxrec.compile_cache import enable_compilation_cache
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
assert enable_compilation_cache(sys.argv[1], min_compile_seconds=0) == sys.argv[1]
jax.jit(lambda x: jnp.tanh(x @ x.T).sum()).lower(jnp.ones((16, 8))).compile()
print(events.count("/jax/compilation_cache/cache_hits"), events.count("/jax/compilation_cache/cache_misses"))
"""


def test_a_restarted_process_hits_the_cache(tmp_path):
    def run():
        out = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / "xla")], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return tuple(int(x) for x in out.stdout.split())

    hits, misses = run()
    assert hits == 0 and misses >= 1 and any((tmp_path / "xla").iterdir())
    hits, misses = run()
    assert hits >= 1 and misses == 0


def test_off_disables_it(monkeypatch):
    from jaxrec.compile_cache import enable_compilation_cache

    monkeypatch.setenv("JAXREC_COMPILATION_CACHE", "off")
    assert enable_compilation_cache() is None
