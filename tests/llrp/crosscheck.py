"""Decode LLRP messages with two independent Python implementations.

Reads `name hex` lines on stdin (messages storegate encoded) and prints
one JSON object per line: what llrpkit's decoder (the one its reader
emulator uses) and sllurp's decoder make of each. An exception is
reported as {"error": ...}, never hidden. Used by tests/llrp.rs.
"""
import dataclasses
import enum
import json
import sys

from llrpkit.protocol import decode_message

try:
    from sllurp.llrp import LLRPMessage as SllurpMessage
except ImportError:  # sllurp is optional: the test says when it is missing
    SllurpMessage = None


def plain(value):
    if dataclasses.is_dataclass(value):
        out = {"_type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = plain(getattr(value, f.name))
        return out
    if isinstance(value, enum.Enum):
        return int(value.value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


for line in sys.stdin:
    name, hexbytes = line.split()
    data = bytes.fromhex(hexbytes)
    result = {"name": name}
    try:
        msg = decode_message(data)
        result["llrpkit"] = plain(msg)
    except Exception as e:  # noqa: BLE001 - reported to the test
        result["llrpkit"] = {"error": f"{type(e).__name__}: {e}"}
    if SllurpMessage is None:
        result["sllurp"] = {"error": "sllurp is not installed"}
    else:
        try:
            result["sllurp"] = plain(SllurpMessage(msgbytes=data).msgdict)
        except Exception as e:  # noqa: BLE001
            result["sllurp"] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
