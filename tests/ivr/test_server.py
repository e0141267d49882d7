"""`ivr run` with an Asterisk manager to talk to: the agent side starts with the server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from ivr.ami_simulator import AmiSimulator
from tests.servers import free_port

IVR = [sys.executable, "-m", "ivr.cli"]


async def test_run_connects_to_the_manager_serves_the_web_pages_and_says_so(tmp_path: Path) -> None:
    simulator = AmiSimulator.like_traces(host="127.0.0.1", port=0, secret="s3cret")
    await simulator.start()
    port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env.update(IVR_AGI_PORT=str(port), IVR_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}",
               IVR_PROMPTS_DIR=str(tmp_path / "prompts"), IVR_AMI_HOST="127.0.0.1",
               IVR_AMI_PORT=str(simulator.port), IVR_AMI_USERNAME="ivr", IVR_AMI_SECRET="s3cret",
               IVR_WEB_PORT=str(web_port))
    server = await asyncio.create_subprocess_exec(*IVR, "run", env=env, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.PIPE)
    try:
        lines = []
        while True:
            line = (await asyncio.wait_for(server.stdout.readline(), 60)).decode()
            assert line, "ivr run ended before it was ready"
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        ami_line = next(line for line in lines if line.strip().startswith("AMI"))
        assert f"connected to 127.0.0.1:{simulator.port}" in ami_line
        assert "not connected" not in ami_line
        web_line = next(line for line in lines if line.strip().startswith("web"))
        assert f"http://127.0.0.1:{web_port}/" in web_line
        reader, writer = await asyncio.open_connection("127.0.0.1", web_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = (await asyncio.wait_for(reader.read(), 10)).decode()
        writer.close()
        assert reply.startswith("HTTP/1.1 200") and '"database": "ok"' in reply
    finally:
        server.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.wait(), 30) == 0
        await simulator.close()
