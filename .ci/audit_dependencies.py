"""Audit the installed environment for known vulnerabilities with pip-audit (CI step).

    .venv/bin/python .ci/audit_dependencies.py

Runs ``pip-audit --skip-editable`` (the project's own editable install is not a published
package) over the virtual environment this interpreter belongs to and decides:

- a known vulnerability that is not a documented exception fails the run (exit 1);
- when the vulnerability service cannot be reached, or answers for none of the packages (so
  nothing was actually audited), it says so in one clear WARNING line and does not fail the
  run for that reason alone (exit 0): an offline machine must not look "clean", nor block CI;
- otherwise it prints how many packages were audited and which could not be.

Documented exceptions live in ``.ci/pip-audit-exceptions.txt``: one vulnerability id per line,
then ``#`` and the reason it does not apply (a line without a reason is an error).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXCEPTIONS = Path(__file__).with_name("pip-audit-exceptions.txt")
TIMEOUT_SECONDS = 300
UNREACHABLE_HINTS = (
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "NameResolutionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Failed to establish a new connection",
)


def unreachable(reason: str) -> int:
    print(
        "WARNING: pip-audit could not reach its vulnerability service; NOTHING WAS AUDITED "
        f"(not a failure on its own; run it where the service is reachable). {reason}"
    )
    return 0


def exceptions() -> dict[str, str]:
    found: dict[str, str] = {}
    if not EXCEPTIONS.exists():
        return found
    for number, raw in enumerate(EXCEPTIONS.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition("#")
        if not reason.strip():
            raise SystemExit(f"{EXCEPTIONS.name}:{number}: {vuln_id.strip()} has no reason")
        found[vuln_id.strip()] = reason.strip()
    return found


def main() -> int:
    ignored = exceptions()
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--skip-editable",
        "--progress-spinner",
        "off",
        "--format",
        "json",
    ]
    for vuln_id in ignored:
        command += ["--ignore-vuln", vuln_id]
    for vuln_id, reason in ignored.items():
        print(f"pip-audit: documented exception {vuln_id}: {reason}")
    try:
        result = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return unreachable(f"no answer within {TIMEOUT_SECONDS} s")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        if any(hint in result.stderr for hint in UNREACHABLE_HINTS):
            return unreachable(result.stderr.strip().splitlines()[-1][:300])
        print(result.stderr[-3000:], file=sys.stderr)
        print(f"pip-audit failed (exit {result.returncode})", file=sys.stderr)
        return 1
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = [d for d in dependencies if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(
                f"VULNERABLE: {dependency['name']} {dependency['version']}: {vuln['id']} "
                f"(fixed in {fixes})"
            )
    if vulnerable:
        print(
            "pip-audit: upgrade these, or document why one does not apply in "
            f".ci/{EXCEPTIONS.name}",
            file=sys.stderr,
        )
        return 1
    if dependencies and not audited:
        return unreachable(
            f"It answered for none of the {len(dependencies)} installed packages; the first "
            f"reason given: {skipped[0]['skip_reason']}"
        )
    for dependency in skipped:
        print(f"pip-audit: not audited: {dependency['name']}: {dependency['skip_reason']}")
    print(f"pip-audit: {len(audited)} packages audited, no known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
