"""The README's results section is generated from the committed results files and must match them."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_block_matches_results_files():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_results_files_of_the_default_run_are_committed():
    for name in ("summary.md", "claims.csv", "manifest.json", "runs.csv", "benchmarks.csv"):
        assert (ROOT / "results" / name).is_file(), name
