#!/usr/bin/env python
"""`make audit`: pip-audit of the pinned requirements.txt against PyPI's vulnerability data.

Exit codes:
  0  every pinned package was audited and none has a known vulnerability;
  1  a known vulnerability (listed with the versions that fix it), or pip-audit failed for another reason;
  3  the vulnerability database could not be reached, so some or all packages were not audited.

pip-audit itself exits 0 when it could not look a package up (it only skips it), so "no vulnerabilities"
could mean "nothing was checked": here a skipped package is never a pass. With ``--unreachable-ok`` (CI, whose
machines may have no route to the database) exit 3 becomes 0 after the warning; a vulnerability still fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = 3
# What pip-audit says when the service did not answer: PyPI's per-release JSON API answered 404 (the package
# is on PyPI, so the release's vulnerability record could not be had), or the connection failed outright.
UNREACHABLE_SIGNS = ("not found on PyPI", "ConnectionError", "Could not connect", "NameResolutionError",
                     "Max retries exceeded", "ServiceError", "Timeout")


def audit(requirements: Path) -> tuple[int, dict | None, str]:
    """pip-audit's exit code, its JSON report (None if it wrote none) and its standard error."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "audit.json"
        finished = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
             "--format", "json", "--output", str(report), "--progress-spinner", "off"],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )
        data = json.loads(report.read_text()) if report.exists() and report.stat().st_size else None
    return finished.returncode, data, finished.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--unreachable-ok", action="store_true",
                        help="exit 0 (after the warning) when the vulnerability database cannot be reached")
    args = parser.parse_args(argv)

    code, data, stderr = audit(args.requirements)
    if data is None:
        sys.stderr.write("\n".join(stderr.strip().splitlines()[-3:]) + "\n")  # a traceback's last lines say why
        if any(sign in stderr for sign in UNREACHABLE_SIGNS):
            return unreachable("pip-audit could not reach the vulnerability database", args.unreachable_ok)
        print(f"pip-audit failed (exit {code}) without a report", file=sys.stderr)
        return 1

    dependencies = data.get("dependencies", [])
    vulnerable = [dep for dep in dependencies if dep.get("vulns")]
    skipped = [dep for dep in dependencies if "skip_reason" in dep]
    audited = len(dependencies) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            print(f"VULNERABLE {dep['name']}=={dep['version']}: {vuln['id']}"
                  f"{f' ({aliases})' if aliases else ''}; fixed in {fixed}")
    if vulnerable:
        print(f"audit: {len(vulnerable)} of {audited} audited packages have known vulnerabilities", file=sys.stderr)
        return 1
    if code != 0:
        sys.stderr.write(stderr)
        print(f"pip-audit failed (exit {code})", file=sys.stderr)
        return 1
    if skipped:
        print(f"not audited: {', '.join(dep['name'] for dep in skipped)}; pip-audit said, e.g.: "
              f"{skipped[0]['skip_reason']}", file=sys.stderr)
        if all(any(sign in dep["skip_reason"] for sign in UNREACHABLE_SIGNS) for dep in skipped):
            return unreachable(f"{len(skipped)} of {len(dependencies)} packages could not be looked up",
                               args.unreachable_ok)
        print(f"audit: {len(skipped)} packages could not be audited", file=sys.stderr)
        return 1
    print(f"audit: no known vulnerabilities in the {audited} packages of {args.requirements.name}")
    return 0


def unreachable(what: str, ok: bool) -> int:
    print(f"WARNING: vulnerability database unreachable: {what}; requirements.txt was NOT audited"
          f"{' (allowed here: --unreachable-ok)' if ok else ''}", file=sys.stderr)
    return 0 if ok else UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
