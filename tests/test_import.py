"""``import tl_circuits`` imports none of the host libraries (they may be broken or absent)."""

import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, tl_circuits, tl_circuits.graph, tl_circuits.attribution, tl_circuits.hosts;"
        "heavy = [m for m in ('transformer_lens', 'nnsight', 'sae_lens') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
