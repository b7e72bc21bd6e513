"""Test worker: the first attempt fails (exit 3), a later one succeeds. A marker file in the run dir
remembers the first attempt, so under torchrun --max-restarts the restarted worker succeeds."""

import os
import sys
import time
from pathlib import Path

marker = Path(os.environ["CORRAL_RUN_DIR"]) / f"attempted-{os.environ.get('RANK', '0')}"
time.sleep(float(os.environ.get("FAIL_ONCE_SLEEP", "0")))
if not marker.exists():
    marker.write_text("1")
    print("first attempt: failing on purpose", flush=True)
    sys.exit(3)
print("later attempt: succeeding", flush=True)
