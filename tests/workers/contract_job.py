"""The backend contract tests' job: say hello, write the CORRAL_* variables it got, sleep, exit with a code.

Usage: python3 tests/workers/contract_job.py SLEEP_S EXIT_CODE
"""

import json
import os
import sys
import time

node = os.environ["CORRAL_NODE"]
print(f"contract job on {node}: started", flush=True)
with open(os.path.join(os.environ["CORRAL_RUN_DIR"], f"contract-{node}.json"), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("CORRAL_")}, f)
time.sleep(float(sys.argv[1]))
print(f"contract job on {node}: exiting {sys.argv[2]}", flush=True)
sys.exit(int(sys.argv[2]))
