"""What a fresh process imports before its first fit gradient (issue 21).

jax and sympy were 1 s of CPU of the fast log-density's start-up: SolveOp's JAX
implementation is now registered when PyTensor's JAX backend is imported, and the code
generator imports sympy only when it generates code. Checked in fresh interpreters,
since this test session may have imported either already.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; the JSON object on its last output line."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fit_layer_imports_no_jax_and_registers_solveop_with_the_jax_backend():
    out = _fresh(
        "import json, sys\n"
        "import carthema.fitting.model.build, carthema.fitting.op.fastlogp\n"
        "before = 'jax' in sys.modules\n"
        "from pytensor.link.jax.dispatch import jax_funcify\n"
        "from carthema.fitting.op.ode_op import SolveOp\n"
        "print(json.dumps({'jax_before': before, 'jax_after': 'jax' in sys.modules,\n"
        "                  'registered': SolveOp in jax_funcify.registry}))\n"
    )
    assert out == {"jax_before": False, "jax_after": True, "registered": True}


def test_solveop_registered_when_the_jax_backend_was_imported_first():
    out = _fresh(
        "import json\n"
        "from pytensor.link.jax.dispatch import jax_funcify\n"
        "from carthema.fitting.op.ode_op import SolveOp\n"
        "print(json.dumps({'registered': SolveOp in jax_funcify.registry}))\n"
    )
    assert out == {"registered": True}


def test_code_generator_imports_sympy_only_to_generate():
    out = _fresh(
        "import json, sys\n"
        "from carthema import get_model\n"
        "from carthema.models import codegen\n"
        "before = 'sympy' in sys.modules\n"
        "text = codegen.numba_source(get_model('cart'))\n"
        "print(json.dumps({'before': before, 'after': 'sympy' in sys.modules,\n"
        "                  'defines_rhs_sens': 'def rhs_sens(' in text}))\n"
    )
    assert out == {"before": False, "after": True, "defines_rhs_sens": True}
