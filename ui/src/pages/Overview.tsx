// The pipeline at a glance: instrumentation rules, sources, the node collector, actions, the
// gateway and destinations, each in a column with its count, red where something fails.

import type { Condition, FleetSummary } from "../api";
import { A, Badge, Empty, Failure, Page, agentTone, toneOf, useQuery } from "../common";
import { StatusBar } from "./Fleet";

interface Item {
  name: string;
  condition: Condition;
}

const OVERVIEW = `{ fleetSummary { total applied applying failed disconnected other }
  sources { name condition { kind status reason message } }
  resources { kind name condition { kind status reason message } }
  destinations { name condition { kind status reason message } health { kind status reason message } }
  agents { role status } problems { message } }`;

interface Overview {
  fleetSummary: FleetSummary;
  sources: Item[];
  resources: (Item & { kind: string })[];
  destinations: (Item & { health: Condition | null })[];
  agents: { role: string | null; status: string }[];
  problems: { message: string }[];
}

function Column({ title, to, items, empty }: { title: string; to: string; items: { name: string; condition: Condition }[]; empty: string }) {
  const failing = items.filter((i) => toneOf(i.condition) === "bad").length;
  return (
    <div className={`column ${failing ? "failing" : ""}`} data-testid={`column-${title}`}>
      <h3>
        <A to={to}>{title}</A> <span className="count">{items.length}</span>
      </h3>
      {items.length === 0 && <p className="muted small">{empty}</p>}
      {items.map((i) => (
        <div key={i.name} className={`chip ${toneOf(i.condition)}`} title={i.condition.message}>
          {i.name.replace(/^default\//, "")}
        </div>
      ))}
    </div>
  );
}

function Collector({ role, agents }: { role: string; agents: { role: string | null; status: string }[] }) {
  const mine = agents.filter((a) => a.role === role);
  const worst = mine.find((a) => a.status === "FAILED") ?? mine.find((a) => a.status !== "APPLIED") ?? mine[0];
  return (
    <div className="collector" data-testid={`collector-${role}`}>
      <span className="arrow">→</span>
      <A to="/fleet">{role}</A>
      {worst ? <Badge tone={agentTone(worst.status)}>{mine.length > 1 ? `${mine.length} ${worst.status}` : worst.status}</Badge> : <Badge tone="off">none</Badge>}
      <span className="arrow">→</span>
    </div>
  );
}

export function OverviewPage() {
  const { data, error } = useQuery<Overview>(OVERVIEW);
  if (!data) return <Page title="Overview"><Failure error={error} /></Page>;
  const rules = data.resources.filter((r) => r.kind === "InstrumentationRule");
  const actions = data.resources.filter((r) => r.kind === "Action" || r.kind === "Sampling");
  const destinations = data.destinations.map((d) => ({
    name: d.name,
    condition: d.health?.status === "False" ? d.health : d.condition,
  }));
  return (
    <Page title="Overview">
      <Failure error={error} />
      <StatusBar summary={data.fleetSummary} />
      {data.problems.length > 0 && (
        <div className="error-box">
          {data.problems.length} {data.problems.length === 1 ? "resource is" : "resources are"} refused. <A to="/problems">See the problems</A>
        </div>
      )}
      <div className="pipeline">
        <Column title="Rules" to="/rules" items={rules} empty="No instrumentation rule" />
        <Column title="Sources" to="/sources" items={data.sources} empty="Nothing instrumented by name yet; SDKs still send OTLP" />
        <Collector role="node" agents={data.agents} />
        <Column title="Actions" to="/actions" items={actions} empty="No action" />
        <Collector role="gateway" agents={data.agents} />
        <Column title="Destinations" to="/destinations" items={destinations} empty="No destination yet" />
      </div>
      {data.destinations.length === 0 && (
        <Empty title="No destination yet">
          <p>Telemetry is received but goes nowhere.</p>
          <A to="/destinations" className="button primary">
            Add a destination
          </A>
        </Empty>
      )}
    </Page>
  );
}
