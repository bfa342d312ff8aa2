// Every agent the OpAMP server manages: a bar split by status, filters, and a table that asks
// the server for only the rows in view (filtered there), so ten thousand agents scroll smoothly.

import { useState } from "react";
import type { AgentStatus, FleetSummary } from "../api";
import { A, Badge, Empty, Failure, Page, SplitBar, agentTone, diffLines, short, useQuery } from "../common";

interface AgentRow {
  uid: string;
  role: string | null;
  node: string | null;
  workload: string | null;
  status: AgentStatus;
  desiredHash: string | null;
  configError: string | null;
  lastSeen: string | null;
}

const FLEET = `query($filter: AgentFilter, $offset: Int, $limit: Int) {
  fleetSummary { total applied applying failed disconnected other }
  agentPage(filter: $filter, offset: $offset, limit: $limit) { total roles
    agents { uid role node workload status desiredHash configError lastSeen } } }`;

export function StatusBar({ summary }: { summary?: FleetSummary }) {
  const s = summary ?? { total: 0, applied: 0, applying: 0, failed: 0, disconnected: 0, other: 0 };
  const parts = [
    { name: "applied", tone: "good" as const, count: s.applied },
    { name: "applying", tone: "busy" as const, count: s.applying + s.other },
    { name: "failed", tone: "bad" as const, count: s.failed },
    { name: "disconnected", tone: "off" as const, count: s.disconnected },
  ];
  return (
    <div className="status-bar">
      <SplitBar parts={parts} label="agents by status" />
      <div className="legend">
        {parts.map((p) => (
          <span key={p.name} className="legend-item" data-testid={`count-${p.name}`}>
            <i className={`dot ${p.tone}`} /> {p.count} {p.name}
          </span>
        ))}
        <span className="legend-item muted">{s.total} agents</span>
      </div>
    </div>
  );
}

const ROW = 44;
const VIEW_ROWS = 14;

/** Rows fetched around the ones in view, in steps of this many, so scrolling refetches rarely. */
const STEP = 20;

export function Fleet() {
  const [role, setRole] = useState("");
  const [node, setNode] = useState("");
  const [status, setStatus] = useState("");
  const [hash, setHash] = useState("");
  const [top, setTop] = useState(0);
  const first = Math.max(0, Math.floor(top / ROW) - 4);
  const offset = Math.max(0, Math.floor(first / STEP) * STEP - STEP);
  const filter = { role: role || null, node: node || null, status: status || null, hash: hash || null };
  const { data, error } = useQuery<{
    fleetSummary: FleetSummary;
    agentPage: { total: number; roles: string[]; agents: AgentRow[] };
  }>(FLEET, { filter, offset, limit: VIEW_ROWS + 4 * STEP });
  const page = data?.agentPage;
  const total = page?.total ?? 0;
  const rows = page?.agents ?? [];
  const visible = rows
    .map((agent, i) => ({ agent, at: offset + i }))
    .filter(({ at }) => at >= first && at < first + VIEW_ROWS + 8);
  return (
    <Page title="Fleet">
      <StatusBar summary={data?.fleetSummary} />
      <Failure error={error} />
      <div className="filters">
        <label>
          Role
          <select value={role} onChange={(e) => setRole(e.target.value)} aria-label="role">
            <option value="">all</option>
            {(page?.roles ?? []).map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.target.value)} aria-label="status">
            <option value="">all</option>
            {["APPLIED", "APPLYING", "PENDING", "FAILED", "DISCONNECTED", "UNASSIGNED"].map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Node
          <input value={node} onChange={(e) => setNode(e.target.value)} placeholder="any" aria-label="node" />
        </label>
        <label>
          Config hash
          <input value={hash} onChange={(e) => setHash(e.target.value)} placeholder="prefix" aria-label="config hash" />
        </label>
      </div>
      {data && total === 0 ? (
        <Empty title={data.fleetSummary.total ? "No agent matches these filters" : "No agent is connected yet"}>
          <p>Collectors, odiglet and SDK agents appear here as soon as they connect over OpAMP.</p>
        </Empty>
      ) : (
        <div className="table virtual" role="table" aria-rowcount={total}>
          <div className="row head" role="row">
            <span>Agent</span>
            <span>Role</span>
            <span>Node</span>
            <span>Status</span>
            <span>Config</span>
            <span>Last seen</span>
          </div>
          <div className="viewport" style={{ height: Math.min(total, VIEW_ROWS) * ROW }} onScroll={(e) => setTop(e.currentTarget.scrollTop)}>
            <div style={{ height: total * ROW, position: "relative" }}>
              {visible.map(({ agent: a, at }) => (
                <div
                  key={a.uid}
                  className={`row ${a.status === "FAILED" ? "failed" : ""}`}
                  role="row"
                  data-testid="agent-row"
                  style={{ position: "absolute", top: at * ROW, height: ROW, left: 0, right: 0 }}
                >
                  <span className="mono">
                    <A to={`/fleet/${a.uid}`}>{short(a.uid)}</A>
                  </span>
                  <span>{a.role ?? a.workload ?? "sdk"}</span>
                  <span className="ellipsis">{a.node ?? "—"}</span>
                  <span>
                    <Badge tone={agentTone(a.status)}>{a.status}</Badge>
                  </span>
                  <span className="ellipsis" title={a.configError ?? a.desiredHash ?? ""}>
                    {a.configError ? <span className="error-text">{a.configError}</span> : <span className="mono">{short(a.desiredHash)}</span>}
                  </span>
                  <span className="muted">{a.lastSeen ? new Date(a.lastSeen).toLocaleTimeString() : "—"}</span>
                </div>
              ))}
            </div>
          </div>
        </div>
      )}
    </Page>
  );
}

interface AgentDetail extends AgentRow {
  pid: number | null;
  capabilities: string[];
  healthy: boolean | null;
  lastError: string | null;
  transport: string | null;
  attributes: { key: string; value: string }[];
  components: { path: string; healthy: boolean; status: string; lastError: string | null; since: string | null }[];
  desiredConfig: { name: string; body: string }[];
  effectiveConfig: { name: string; body: string }[];
  configHistory: { at: string; hash: string; status: AgentStatus; error: string | null }[];
}

const AGENT = `query($uid: String!) { agent(uid: $uid) { uid role node workload status desiredHash configError lastSeen
  pid capabilities healthy lastError transport attributes { key value }
  components { path healthy status lastError since } desiredConfig { name body } effectiveConfig { name body }
  configHistory { at hash status error } } }`;

export function Agent({ uid }: { uid: string }) {
  const { data, error } = useQuery<{ agent: AgentDetail | null }>(AGENT, { uid });
  const agent = data?.agent;
  if (data && !agent) {
    return (
      <Page title="Agent">
        <Empty title={`No agent ${uid}`}>
          <p>
            It may have gone away. <A to="/fleet">Back to the fleet</A>
          </p>
        </Empty>
      </Page>
    );
  }
  const names = [...new Set([...(agent?.desiredConfig ?? []), ...(agent?.effectiveConfig ?? [])].map((f) => f.name))];
  return (
    <Page title={agent ? `${agent.role ?? "agent"} ${short(agent.uid)}` : "Agent"}>
      <Failure error={error} />
      {agent && (
        <>
          <div className="cards">
            <div className="card">
              <h3>Config</h3>
              <Badge tone={agentTone(agent.status)}>{agent.status}</Badge>
              <p className="mono">{short(agent.desiredHash)}</p>
              {agent.configError && <p className="error-text">{agent.configError}</p>}
            </div>
            <div className="card">
              <h3>Health</h3>
              <Badge tone={agent.healthy === false ? "bad" : agent.healthy ? "good" : "idle"}>
                {agent.healthy === false ? "unhealthy" : agent.healthy ? "healthy" : "not reported"}
              </Badge>
              {agent.lastError && <p className="error-text">{agent.lastError}</p>}
            </div>
            <div className="card">
              <h3>Connection</h3>
              <p>{agent.transport ?? "disconnected"}</p>
              <p className="muted">last seen {agent.lastSeen ? new Date(agent.lastSeen).toLocaleString() : "never"}</p>
            </div>
          </div>
          <h2>Description</h2>
          <dl className="attributes">
            {agent.attributes.map((a) => (
              <div key={a.key}>
                <dt>{a.key}</dt>
                <dd className="mono">{a.value}</dd>
              </div>
            ))}
            <div>
              <dt>capabilities</dt>
              <dd>{agent.capabilities.join(", ")}</dd>
            </div>
          </dl>
          <h2>Components</h2>
          <div className="table">
            {agent.components.map((c) => (
              <div key={c.path} className={`row components ${c.healthy ? "" : "failed"}`}>
                <span className="mono">{c.path}</span>
                <span>
                  <Badge tone={c.healthy ? "good" : "bad"}>{c.healthy ? "ok" : "failing"}</Badge>
                </span>
                <span className="ellipsis" title={c.lastError ?? c.status}>
                  {c.status}
                  {c.lastError && <span className="error-text"> — {c.lastError}</span>}
                </span>
              </div>
            ))}
          </div>
          <h2>Config history</h2>
          {agent.configHistory.length === 0 && <p className="muted">It has not reported on a config yet.</p>}
          <div className="table">
            {[...agent.configHistory].reverse().map((e, i) => (
              <div key={i} className={`row history ${e.status === "FAILED" ? "failed" : ""}`} data-testid="config-event">
                <span className="muted">{new Date(e.at).toLocaleString()}</span>
                <span>
                  <Badge tone={agentTone(e.status)}>{e.status}</Badge>
                </span>
                <span className="mono">{short(e.hash)}</span>
                <span className="ellipsis error-text" title={e.error ?? ""}>
                  {e.error ?? ""}
                </span>
              </div>
            ))}
          </div>
          <h2>Desired and effective config</h2>
          {names.length === 0 && <p className="muted">No config is meant for this agent, and it reports none.</p>}
          {names.map((name) => {
            const desired = agent.desiredConfig.find((f) => f.name === name)?.body ?? "";
            const effective = agent.effectiveConfig.find((f) => f.name === name)?.body ?? "";
            const lines = diffLines(desired, effective);
            const differs = lines.some((l) => l.kind !== "same");
            return (
              <div key={name} className="diff-block">
                <h3>
                  {name} {differs ? <Badge tone="busy">differs</Badge> : <Badge tone="good">same</Badge>}
                </h3>
                <div className="diff">
                  <div className="diff-side">
                    <h4>desired</h4>
                    <pre>
                      {lines
                        .filter((l) => l.kind !== "right")
                        .map((l, i) => (
                          <div key={i} className={l.kind === "left" ? "removed" : ""}>
                            {l.text || " "}
                          </div>
                        ))}
                    </pre>
                  </div>
                  <div className="diff-side">
                    <h4>effective</h4>
                    <pre>
                      {lines
                        .filter((l) => l.kind !== "left")
                        .map((l, i) => (
                          <div key={i} className={l.kind === "right" ? "added" : ""}>
                            {l.text || " "}
                          </div>
                        ))}
                    </pre>
                  </div>
                </div>
              </div>
            );
          })}
        </>
      )}
    </Page>
  );
}
