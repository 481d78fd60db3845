"""Check parse_key against sf_keys.json: [field value, key or null (400)]."""
import json
import os
import sys

from idempotency_http import InvalidKey, parse_key

cases = json.load(open(os.path.join(os.path.dirname(__file__), "sf_keys.json")))
bad = []
for raw, want in cases:
    try:
        got = parse_key(raw)
    except InvalidKey:
        got = None
    if got != want:
        bad.append("%r: got %r, want %r" % (raw, got, want))
print("\n".join(bad) or "%d cases" % len(cases))
sys.exit(1 if bad else 0)
