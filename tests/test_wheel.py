"""The package works installed: a non-editable wheel, in its own environment, run from another folder."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs_the_test_preset_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
    )
    (wheel,) = dist.glob("adaptertune-*.whl")
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    env_py = env_dir / "bin" / "python"
    env_site = Path(
        subprocess.run(
            [env_py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # the dependencies (torch, timm, ...) come from this interpreter's site-packages; a plain path entry, so the
    # editable install's finder there is not activated and only the wheel's copy of adaptertune can be imported
    (env_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(env_site), str(wheel)], check=True
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [env_py, "-c", "import adaptertune; print(adaptertune.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(env_site)), where
    out = subprocess.run(
        [env_py, "-m", "adaptertune", "bench", "--preset", "test", "--out-dir", "bench", "--quiet"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| imagefolder |" in out.stdout
    assert (work / "bench" / "report" / "report.html").is_file()
    print(out.stdout)
