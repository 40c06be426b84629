"""llrpkit's reader emulator in-process, for what its CLI cannot do.

    python emulator.py PORT TAGS

Serves the same LLRPEmulator class `llrpkit emulate` runs (4 antennas,
llrpkit's default tag population) and reads commands on stdin:
`off N` / `on N` pull antenna N's cable or plug it back (the reader then
sends an AntennaEvent and stops/resumes reads on that port). Prints
`listening` once the port is open. Used by tests/llrp.rs.
"""
import asyncio
import sys

from llrpkit.emulator.core import LLRPEmulator, default_population


async def main(port: int, tags: int) -> None:
    emu = LLRPEmulator(port=port, tags=default_population(tags, 4), reads_per_sec=100.0)
    await emu.start()
    print("listening", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:  # the test ended
            break
        command, antenna = line.split()
        await emu.set_antenna_connected(int(antenna), command == "on")
        print(f"antenna {antenna} {command}", flush=True)
    await emu.stop()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
