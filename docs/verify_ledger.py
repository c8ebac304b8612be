#!/usr/bin/env python3
"""Verify a kling-audit ledger from its files alone, by the byte rule of docs/format.md.

usage: verify_ledger.py LEDGER_DIR [MAC_ROOT_KEY_HEX]   exit 0 intact, 1 fault
"""
import hashlib, hmac, json, pathlib, sys

def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)

def verify(directory, mac_root=None):
    prev, seq, epoch, key = bytes(32), 0, 0, mac_root
    paths = sorted(pathlib.Path(directory).glob("seg-*.jsonl"))
    for path in paths:
        data = path.read_bytes()
        if path == paths[-1]:
            data = data.rstrip(b"\0")  # the writer's zero-filled reserve
        if data and not data.endswith(b"\n"):
            return f"{path.name}: torn tail"
        for n, line in enumerate(data.split(b"\n")[:-1], 1):
            where = f"{path.name} line {n}"
            body, sep, rest = line.rpartition(b',"hash":"')
            try:
                rec = json.loads(line, object_pairs_hook=no_duplicates)
            except ValueError as e:  # not JSON, or a repeated key
                return f"{where}: malformed line ({e})"
            leaf = hashlib.sha256(b"\x00" + body).digest()
            if not sep or rest != rec["hash"].encode() + b'"}' or leaf.hex() != rec["hash"]:
                return f"{where}: altered record"
            if rec["seq"] != seq or bytes.fromhex(rec["prev"]) != prev:
                return f"{where}: expected seq {seq} linked to {prev.hex()[:12]}"
            if key is not None:
                if rec["epoch"] < epoch:
                    return f"{where}: epoch went back"
                while epoch < rec["epoch"]:
                    key, epoch = hashlib.sha256(b"kling-audit/epoch/v1" + key).digest(), epoch + 1
                mac_input = body.rpartition(b',"mac":"')[0]
                if hmac.new(key, mac_input, hashlib.sha256).hexdigest() != rec["mac"]:
                    return f"{where}: bad MAC"
            prev, seq = leaf, seq + 1
    if not seq:  # a ledger starts with a record (`init` writes one): an empty one was wiped
        return "no records: the ledger was wiped, or never written"
    print(f"intact: {seq} record{'' if seq == 1 else 's'}, head {prev.hex()}")
    return None

if __name__ == "__main__":
    fault = verify(sys.argv[1], bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else None)
    if fault:
        print(f"FAULT: {fault}")
    sys.exit(1 if fault else 0)
