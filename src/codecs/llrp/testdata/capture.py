"""Capture reader frames from llrpkit's emulator as test vectors.

Runs the emulator in-process (so an antenna can be disconnected), talks
to it over a real TCP socket with llrpkit's own encoder, and writes each
frame the reader sent to capture.hex as `name hex` lines.

    /tmp/llrpvenv/bin/python src/codecs/llrp/testdata/capture.py
"""
import asyncio
import pathlib

from llrpkit.emulator.core import LLRPEmulator, EmulatedTag, default_population
from llrpkit.inventory import build_rospec
from llrpkit.protocol import messages, params

OUT = pathlib.Path(__file__).with_name("capture.hex")


async def read_frame(reader):
    header = await reader.readexactly(10)
    length = int.from_bytes(header[2:6], "big")
    return header + await reader.readexactly(length - 10)


async def main():
    tags = default_population(4, 4) + [EmulatedTag(epc=bytes(range(0x30, 0x40)), antennas=(2,))]
    emu = LLRPEmulator(tags=tags, reads_per_sec=200.0, seed=7)
    await emu.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    frames = {}

    async def ask(name, msg, mid):
        writer.write(msg.to_bytes(message_id=mid))
        await writer.drain()
        frames[name] = await read_frame(reader)

    frames["connection_attempt"] = await read_frame(reader)
    await ask("capabilities_response", messages.GET_READER_CAPABILITIES(requested_data=0), 1)
    await ask(
        "set_reader_config_response",
        messages.SET_READER_CONFIG(
            keepalive_spec=params.KeepaliveSpec(keepalive_trigger_type=1, periodic_trigger_value=300)
        ),
        2,
    )
    await ask("delete_rospec_error", messages.DELETE_ROSPEC(ro_spec_id=0), 3)
    await ask("add_rospec_response", messages.ADD_ROSPEC(ro_spec=build_rospec(ro_spec_id=7)), 4)
    await ask("enable_rospec_response", messages.ENABLE_ROSPEC(ro_spec_id=7), 5)
    await ask("start_rospec_response", messages.START_ROSPEC(ro_spec_id=7), 6)
    seen = set()
    while not {"report_epc96", "report_epcdata", "keepalive"} <= seen:
        f = await read_frame(reader)
        t = int.from_bytes(f[0:2], "big") & 0x3FF
        if t == 61:
            # EPCData (TLV 241) right after the TagReportData header, or EPC-96 (TV).
            name = "report_epcdata" if f[14:16] == b"\x00\xf1" else "report_epc96"
        elif t == 62:
            name = "keepalive"
        else:
            name = f"type{t}"
        if name not in seen:
            seen.add(name)
            frames[name] = f
    await emu.set_antenna_connected(3, False)
    while True:
        f = await read_frame(reader)
        if int.from_bytes(f[0:2], "big") & 0x3FF == 63:
            frames["antenna_disconnected"] = f
            break
    writer.write(messages.CLOSE_CONNECTION().to_bytes(message_id=9))
    await writer.drain()
    while True:
        f = await read_frame(reader)
        if int.from_bytes(f[0:2], "big") & 0x3FF == 4:
            frames["close_connection_response"] = f
            break
    writer.close()
    await emu.stop()
    OUT.write_text("".join(f"{k} {v.hex()}\n" for k, v in frames.items()))
    print(f"wrote {len(frames)} frames to {OUT}")


asyncio.run(main())
