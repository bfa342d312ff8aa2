"""An agent built on the OpenTelemetry OpAMP client for Python (PyPI opentelemetry-opamp-client).

Usage: opamp_agent.py ENDPOINT TOKEN [WORKLOAD]

An empty TOKEN sends none (as an SDK does through odiglet's relay).

With WORKLOAD (`namespace/<kind>-<name>`), the agent describes itself as the instrumentation of
that workload (attribute odigos.workload), as an SDK agent under odigos does.

Polls ENDPOINT over plain HTTP every second. Prints one JSON line per remote config file it
receives ({"file", "config", "hash"}) and reports each config APPLIED. Runs until killed.
"""

import json
import sys
import time

from opentelemetry._opamp import OpAMPAgent, OpAMPCallbacks, OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2 as pb


class Callbacks(OpAMPCallbacks):
    def on_message(self, agent, client, message):
        if message.remote_config is None:
            return
        config_hash = message.remote_config.config_hash
        for name, config in client.decode_remote_config(message.remote_config):
            print(json.dumps({"file": name, "config": config, "hash": config_hash.hex()}), flush=True)
        status = client.update_remote_config_status(config_hash, pb.RemoteConfigStatuses_APPLIED)
        if status:
            agent.send(client.build_remote_config_status_response_message(status))


def main():
    endpoint, token = sys.argv[1], sys.argv[2]
    attributes = {"odigos.role": "sdk"}
    if len(sys.argv) > 3:
        attributes["odigos.workload"] = sys.argv[3]
    client = OpAMPClient(
        endpoint=endpoint,
        headers={"Authorization": f"Bearer {token}"} if token else {},
        agent_identifying_attributes={"service.name": "py-agent", "service.version": "1.0"},
        agent_non_identifying_attributes=attributes,
    )
    agent = OpAMPAgent(interval=1, callbacks=Callbacks(), client=client)
    agent.start()
    print(json.dumps({"uid": client._instance_uid.hex()}), flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
