"""``python -m dataplane`` as a process: sync from a control plane, proxy, report, stop."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import grpc
import openai

from meterline.dataplane.v1 import config_pb2, config_pb2_grpc, usage_pb2, usage_pb2_grpc
from tests.support.processes import free_port

# The key build_snapshot (conftest) gives consumer acme-corp.
ACME_KEY = "sk-meterline-acme-0001"


class ControlPlane(config_pb2_grpc.ConfigServiceServicer, usage_pb2_grpc.UsageServiceServicer):
    """Serves one snapshot and stores usage, like the real control plane would."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot
        self.config_requests: asyncio.Queue[config_pb2.ConfigRequest] = asyncio.Queue()
        self.events: dict[str, usage_pb2.UsageEvent] = {}
        self.event_arrived = asyncio.Event()

    async def StreamConfig(self, request_iterator, context):
        first = await anext(request_iterator)
        self.config_requests.put_nowait(first)
        yield config_pb2.ConfigResponse(version_info="v1", nonce="n1", snapshot=self.snapshot)
        async for request in request_iterator:
            self.config_requests.put_nowait(request)

    async def StreamUsage(self, request_iterator, context):
        async for batch in request_iterator:
            for event in batch.events:
                self.events[event.id] = event
            self.event_arrived.set()
            yield usage_pb2.UsageAck(batch_id=batch.batch_id, accepted_count=len(batch.events))


async def test_dataplane_process_end_to_end(fake, snapshot_for) -> None:
    control_plane = ControlPlane(snapshot_for(fake.chat_url))
    server = grpc.aio.server()
    config_pb2_grpc.add_ConfigServiceServicer_to_server(control_plane, server)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(control_plane, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dataplane",
        "--insecure-dev",
        "--cp",
        f"127.0.0.1:{port}",
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "dp-proc",
        "--usage-flush-ms",
        "20",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(15):
            # Given a data plane that says where it listens and got its config
            url = None
            while url is None:
                line = (await process.stderr.readline()).decode()
                assert line, "dataplane exited early:\n" + "".join(log)
                log.append(line)
                if match := re.search(r"dataplane listening on (http://\S+)", line):
                    url = match.group(1)
            hello = await control_plane.config_requests.get()
            assert hello.node.id == "dp-proc" and hello.node.version
            ack = await control_plane.config_requests.get()
            assert (ack.version_info, ack.response_nonce) == ("v1", "n1")

            # When a client calls it through the openai SDK
            async with openai.AsyncOpenAI(
                base_url=f"{url}/chat", api_key=ACME_KEY, max_retries=0
            ) as client:
                completion = await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hello world"}]
                )
            assert completion.usage is not None

            # Then the usage reaches the control plane, exactly
            while len(control_plane.events) < 2:
                control_plane.event_arrived.clear()
                await control_plane.event_arrived.wait()
            tokens = sorted(
                (e.llm_tokens.token_type, e.llm_tokens.tokens)
                for e in control_plane.events.values()
            )
            assert tokens == [
                (usage_pb2.TOKEN_TYPE_INPUT, completion.usage.prompt_tokens),
                (usage_pb2.TOKEN_TYPE_OUTPUT, completion.usage.completion_tokens),
            ]
            assert {e.source for e in control_plane.events.values()} == {"dp-proc"}

            # And SIGTERM stops it cleanly
            process.send_signal(signal.SIGTERM)
            rest = (await process.stderr.read()).decode()
            log.append(rest)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop(None)
    output = "".join(log)
    assert "applied config version v1" in output
    assert "dataplane stopped" in output
    assert "sk-provider" not in output  # provider keys never reach a log


async def test_workers_share_the_port_each_with_its_node_id_and_state(
    fake, snapshot_for, tmp_path
) -> None:
    control_plane = ControlPlane(snapshot_for(fake.chat_url))
    server = grpc.aio.server()
    config_pb2_grpc.add_ConfigServiceServicer_to_server(control_plane, server)
    usage_pb2_grpc.add_UsageServiceServicer_to_server(control_plane, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http_port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dataplane",
        "--insecure-dev",
        "--cp",
        f"127.0.0.1:{port}",
        "--listen",
        f"127.0.0.1:{http_port}",
        "--node-id",
        "dp-multi",
        "--workers",
        "2",
        "--state-dir",
        str(tmp_path / "state"),
        "--usage-flush-ms",
        "20",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(20):
            # Given two workers that both listen on the one port and got their config
            listening = 0
            while listening < 2:
                line = (await process.stderr.readline()).decode()
                assert line, "dataplane exited early:\n" + "".join(log)
                log.append(line)
                listening += "dataplane listening on" in line
            hellos = {(await control_plane.config_requests.get()).node.id for _ in range(4)}
            assert {"dp-multi-w0", "dp-multi-w1"} <= hellos

            # When clients call it on fresh connections (the kernel spreads them)
            completions = []
            for _ in range(16):
                async with openai.AsyncOpenAI(
                    base_url=f"http://127.0.0.1:{http_port}/chat", api_key=ACME_KEY, max_retries=0
                ) as client:
                    completions.append(
                        await client.chat.completions.create(
                            model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
                        )
                    )

            # Then every request's usage reaches the control plane exactly, from the workers
            while len(control_plane.events) < 2 * len(completions):
                control_plane.event_arrived.clear()
                await control_plane.event_arrived.wait()
            billed = sum(e.llm_tokens.tokens for e in control_plane.events.values())
            assert billed == sum(c.usage.total_tokens for c in completions if c.usage)
            assert {e.source for e in control_plane.events.values()} <= {
                "dp-multi-w0",
                "dp-multi-w1",
            }
            # And each worker keeps its state in its own subdirectory
            assert (tmp_path / "state" / "w0" / "spool").is_dir()
            assert (tmp_path / "state" / "w1" / "spool").is_dir()

            # And SIGTERM stops every worker cleanly
            process.send_signal(signal.SIGTERM)
            log.append((await process.stderr.read()).decode())
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await server.stop(None)
    assert "".join(log).count("dataplane stopped") == 2
