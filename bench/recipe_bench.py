#!/usr/bin/env python3
"""Measures the reference Python recipe (append and verify) for side-by-side comparison.

usage: recipe_bench.py RECIPE_PATH WORK_DIR N   prints one JSON line with the rates
"""
import importlib.util, json, os, sys, time

recipe_path, work_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("recipe", recipe_path)
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)

os.makedirs(work_dir, exist_ok=True)
logger = recipe.AuditLogger(work_dir)
details = {"action": "text_to_video", "model": "kling-v2-master", "duration": 5, "mode": "std",
           "prompt_hash": "3f1c2a7b0b6c4c39", "prompt_length": 142, "pad": "x" * 60}
start = time.perf_counter()
for i in range(n):
    logger.log("task_submitted", "actor-%d" % (i % 3), details)
append_s = time.perf_counter() - start

files = sorted(f for f in os.listdir(work_dir) if f.endswith(".jsonl"))
path = os.path.join(work_dir, files[0])
size = os.path.getsize(path)
devnull = open(os.devnull, "w")
stdout, sys.stdout = sys.stdout, devnull
start = time.perf_counter()
ok = recipe.verify_audit_chain(path)
verify_s = time.perf_counter() - start
sys.stdout = stdout
print(json.dumps({"appends_per_s": n / append_s, "verified_per_s": n / verify_s,
                  "bytes_per_record": size / n, "verify_ok": ok}))
