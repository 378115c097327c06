"""The suite, the grid runner, reports and results. What several of them (and the tests) need to agree on lives here."""

from pathlib import Path

ALGORITHMS = Path(__file__).resolve().parents[1] / "algorithms"

# Scripts in algorithms/ that train no policy: the off-policy evaluators estimate a saved policy's value, so they have
# no run folder of their own, no update loop to time, no policy to export and no row in the algorithm table.
EVALUATORS = ("fqe", "ope")


def all_scripts() -> list[str]:
    """Every script in algorithms/ (its stem), evaluators included; helper modules (`_*.py`) left out."""
    return sorted(p.stem for p in ALGORITHMS.glob("*.py") if not p.stem.startswith("_"))


def training_scripts() -> list[str]:
    """Every script in algorithms/ that trains a policy."""
    return [s for s in all_scripts() if s not in EVALUATORS]
