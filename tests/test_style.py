"""The repository is clean under its linter (`[tool.ruff]` in pyproject.toml: pycodestyle and pyflakes, 120 columns),
and its imports run the way docs/architecture.md says."""
import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_timeout


def test_ruff_check_is_clean():
  root = Path(__file__).resolve().parent.parent
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(root)], capture_output=True,
                        text=True, cwd=root, timeout=subprocess_timeout())
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _stages_from_architecture_doc(root: Path) -> tuple[dict[str, int], set[str]]:
  """Module prefix -> row of docs/architecture.md's stage table (bottom-up), and the utilities listed under it."""
  text = (root / "docs" / "architecture.md").read_text()
  utilities = set(re.findall(r"`(\w+)\.py`", text.split("Under every row:")[1].split("| stage |")[0]))
  table = text.split("| stage | where | what it does |")[1].split("\n\n")[0]
  stages = {}
  for row, line in enumerate(x for x in table.splitlines() if x.startswith("| ") and not x.startswith("|---")):
    where = line.split("|")[2]
    for path in re.findall(r"`(evalkit/[\w/]*?)(?:\.py|/)?`", where):
      stages[path.replace("/", ".")] = row
  return stages, {f"evalkit.{u}" for u in utilities}


def test_imports_follow_the_architecture_docs_order():
  """docs/architecture.md lists the stages bottom-up; every evalkit import goes to its own stage, an earlier row, or a
  utility — checked on the code's actual import statements."""
  root = Path(__file__).resolve().parent.parent
  stages, utilities = _stages_from_architecture_doc(root)
  assert {"evalkit.models", "evalkit.adapters", "evalkit.cli", "evalkit.demo"} <= set(stages), stages
  assert {"evalkit.errors", "evalkit.fileio", "evalkit.metrics"} <= utilities, utilities

  def row(module: str) -> int | None:
    if module in utilities or module == "evalkit":
      return -1
    hits = [(len(p), r) for p, r in stages.items() if module == p or module.startswith(p + ".")]
    return max(hits)[1] if hits else None

  upward = []
  for path in sorted((root / "evalkit").rglob("*.py")):
    module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    if module == "evalkit.__main__":
      continue
    mine = row(module)
    assert mine is not None, f"{module} is in no row of docs/architecture.md"
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      else:
        continue
      for target in (t for t in targets if t.startswith("evalkit")):
        theirs = row(target)
        if theirs is not None and theirs > mine and mine != -1 or (mine == -1 and theirs not in (-1, None)):
          upward.append(f"{module} imports {target}")
  assert not upward, upward


def test_reports_and_analyses_read_records_only():
  """Records are the contract (docs/architecture.md): report/ and analysis/ import neither task specs nor cards."""
  root = Path(__file__).resolve().parent.parent
  found = []
  for path in sorted([*(root / "evalkit" / "report").rglob("*.py"), *(root / "evalkit" / "analysis").rglob("*.py")]):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([node.module] + [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom)
               and node.module else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
      found += [f"{path.name} imports {n}" for n in names if n in ("evalkit.tasks", "evalkit.checkpoints.cards")]
  assert not found, found


def test_the_architecture_doc_names_every_module():
  """docs/architecture.md is where a newcomer finds a module: each file of evalkit/ is named there."""
  root = Path(__file__).resolve().parent.parent
  text = (root / "docs" / "architecture.md").read_text()
  unnamed = [str(p.relative_to(root)) for p in sorted((root / "evalkit").rglob("*.py"))
             if p.name not in ("__init__.py", "__main__.py") and f"`{p.name}`" not in text
             and f"`{p.relative_to(root).as_posix()}`" not in text]
  assert not unnamed, unnamed
