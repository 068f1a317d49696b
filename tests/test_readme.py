"""README.md stays true: it names every rule, reason code and weigher the engine has."""
import re
from pathlib import Path

from placecheck_engine.rules import RULES
from placecheck_engine.weighers import WEIGHERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
RULES_DIR = Path(__file__).resolve().parents[1] / "engine" / "rules"


def test_every_rule_is_listed():
    listed = set(re.findall(r"^\| `([A-Za-z_:<>]+)`", README, flags=re.M))
    assert {("resource:<CLASS>" if name == "resource" else name) for name in RULES} <= listed


def test_every_weigher_is_listed():
    assert [w.name for w in WEIGHERS if w.name not in README] == []


def test_every_reason_code_is_mentioned():
    codes = set()
    for module in RULES_DIR.glob("*.py"):
        codes |= set(re.findall(r'^[A-Z_]+ = "([A-Z][A-Z_]+)"', module.read_text(), flags=re.M))
    codes.discard("COMPUTE_SAME_HOST_COLD_MIGRATE")  # a trait name, not a reason
    assert sorted(code for code in codes if code not in README) == []
