"""services/kit/ is a library that knows no service: none of its modules imports a service
(``services.<name>``), the gateway, the operators' tools (``operations``) or the application's
contract (``contracts``: config.yml hands the kit its tables, services/kit/config.py)."""
import ast
from pathlib import Path

KIT = Path(__file__).resolve().parents[2] / "services" / "kit"
FORBIDDEN_PACKAGES = ("gateway", "operations", "contracts")


def imported_modules(path, root=KIT.parents[1]):
    """(line, absolute dotted name) of every module ``path`` (under ``root``, the checkout)
    imports, its ``from X import Y`` names included (Y may be a module), relative imports
    resolved."""
    package = ".".join(path.relative_to(root).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def outside_the_kit(module):
    parts = module.split(".")
    if parts[0] in FORBIDDEN_PACKAGES:
        return True
    return parts[0] == "services" and len(parts) > 1 and parts[1] != "kit"


def test_no_kit_module_imports_a_service_the_gateway_or_operations():
    files = sorted(KIT.rglob("*.py"))
    assert KIT / "handlers.py" in files  # the walk found the kit
    offending = [f"{path.relative_to(KIT.parents[1])}:{line}: {module}"
                 for path in files for line, module in imported_modules(path)
                 if outside_the_kit(module)]
    assert not offending, "the kit imports what it must not know:\n" + "\n".join(offending)


def test_the_check_sees_every_form_of_import(tmp_path):
    kit = tmp_path / "services" / "kit"
    kit.mkdir(parents=True)
    module = kit / "probe.py"
    module.write_text("import gateway.http\nfrom services import auth\n"
                      "from ..course import commands\nfrom operations.cli import main\n"
                      "from services.kit import db\nfrom . import topology\n"
                      "def late():\n    import contracts\n")
    found = [name for _, name in imported_modules(module, tmp_path) if outside_the_kit(name)]
    assert found == ["gateway.http", "services.auth", "services.course",
                     "services.course.commands", "operations.cli", "operations.cli.main",
                     "contracts"]
