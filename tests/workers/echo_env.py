"""Test worker (plain mode): records its argv and chosen environment, then optionally sleeps."""

import json
import os
import sys
import time
from pathlib import Path

keys = [k for k in os.environ if k.startswith(("CORRAL_", "HOSTILE", "SECRET_", "VIRTUAL_ENV"))] + ["PATH"]
record = {
    "argv": sys.argv[1:],
    "env": {k: os.environ.get(k) for k in keys},
    "cwd": os.getcwd(),
    "python": sys.executable,
}
out = Path(os.environ["CORRAL_RUN_DIR"]) / f"echo-{os.environ['CORRAL_NODE']}.json"
out.write_text(json.dumps(record))
print("echo worker wrote", out, flush=True)
sleep = float(os.environ.get("ECHO_SLEEP", "0"))
time.sleep(sleep)
print("echo worker done", flush=True)
