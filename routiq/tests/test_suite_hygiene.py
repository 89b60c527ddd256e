"""The suite uses the Redis it is given (REDIS_URL): `make test` on a machine whose only Redis is the
embedded one (a Unix socket in .devdata/) must not reach for a server on the default TCP port."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARD_CODED_REDIS = re.compile(r"(127\.0\.0\.1|localhost):6379")


def test_no_test_hard_codes_a_redis_address():
    test_files = [path for path in ROOT.glob("*/**/*.py")
                  if not path.is_relative_to(ROOT / ".venv") and ("tests" in path.parts or "testing" in path.parts
                                                                   or path.name == "conftest.py")]
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in test_files
                 for number, line in enumerate(path.read_text().splitlines(), 1) if HARD_CODED_REDIS.search(line)]

    assert len(test_files) > 20
    assert offenders == []
