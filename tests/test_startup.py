"""What starting adaptertune loads: the package's public names on first use, and a CLI whose ``--help`` (and the
commands without config flags) never imports torch."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import adaptertune

SRC = Path(__file__).resolve().parents[1] / "src"

# a fresh interpreter: run the CLI on argv, then report which heavy modules it imported
_PROBE = """
import json, sys
from adaptertune.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in ("torch", "timm", "torchvision", "adaptertune.methods") if m in sys.modules)),
      file=sys.stderr)
"""


def _loaded(*argv: str) -> list[str]:
    env = {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.startswith("usage: adaptertune"), r.stdout[:200]
    return json.loads(r.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["eval", "--help"], ["list", "--help"], ["sweep", "--help"], ["bench", "--help"], ["toy", "--help"]],
    ids=" ".join,
)
def test_help_does_not_import_torch(argv):
    assert _loaded(*argv) == []


def test_a_command_with_config_flags_reads_the_methods():  # the flags are the methods' options: torch is needed
    assert {"adaptertune.methods", "torch"} <= set(_loaded("train", "--help"))


def test_lazy_exports_match_the_type_checking_imports_and_all():
    tree = ast.parse(Path(adaptertune.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {a.name: "." + node.module for node in block.body for a in node.names}
    assert typed == adaptertune._MODULE_OF
    assert set(adaptertune.__all__) == {*typed, "__version__"}
    for name in adaptertune.__all__:
        assert getattr(adaptertune, name) is not None
    assert set(adaptertune.__all__) <= set(dir(adaptertune))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        adaptertune.nope  # noqa: B018
