// The pipeline at a glance: instrumentation rules, sources, the node collector, actions, the
// gateway and destinations, each in a column with its count, red where something fails, and
// the items per second on each edge, read from the collectors' own metrics.

import type { Condition, FleetSummary } from "../api";
import { A, Badge, Empty, Failure, Page, agentTone, toneOf, useQuery } from "../common";
import { StatusBar } from "./Fleet";

interface Item {
  name: string;
  condition: Condition;
  /** Items per second through it, when measured. */
  rate?: number | null;
}

interface Rates {
  received: number;
  sent: number;
  failed: number;
}

interface Role {
  role: string;
  summary: FleetSummary;
  throughput: Rates | null;
}

const OVERVIEW = `{ fleetSummary { total applied applying failed disconnected other }
  sources { name throughput condition { kind status reason message } }
  services { service items source }
  resources { kind name condition { kind status reason message } }
  destinations { name condition { kind status reason message } health { kind status reason message } throughput { sent failed } }
  roles { role summary { total applied applying failed disconnected other } throughput { received sent failed } }
  problems { message } }`;

interface Overview {
  fleetSummary: FleetSummary;
  sources: (Item & { throughput: number | null })[];
  services: { service: string; items: number; source: string | null }[];
  resources: (Item & { kind: string })[];
  destinations: (Item & { health: Condition | null; throughput: { sent: number; failed: number } | null })[];
  roles: Role[];
  problems: { message: string }[];
}

/** Items per second, short: `0.4/s`, `12/s`, `3.1k/s`. */
export function perSecond(rate: number): string {
  if (rate >= 1000) return `${(rate / 1000).toFixed(1)}k/s`;
  if (rate >= 10 || rate === 0) return `${Math.round(rate)}/s`;
  return `${rate.toFixed(1)}/s`;
}

function Column({ title, to, items, empty }: { title: string; to: string; items: Item[]; empty: string }) {
  const failing = items.filter((i) => toneOf(i.condition) === "bad").length;
  return (
    <div className={`column ${failing ? "failing" : ""}`} data-testid={`column-${title}`}>
      <h3>
        <A to={to}>{title}</A> <span className="count">{items.length}</span>
      </h3>
      {items.length === 0 && <p className="muted small">{empty}</p>}
      {items.map((i) => (
        <div key={i.name} className={`chip ${toneOf(i.condition)}`} title={i.condition.message}>
          <span className="ellipsis">{i.name.replace(/^default\//, "")}</span>
          {i.rate != null && <span className="rate">{perSecond(i.rate)}</span>}
        </div>
      ))}
    </div>
  );
}

function Collector({ role, roles }: { role: string; roles: Role[] }) {
  const mine = roles.find((r) => r.role === role);
  const counts = mine?.summary;
  const worst = !counts || counts.total === 0
    ? undefined
    : counts.failed
      ? "FAILED"
      : counts.applied === counts.total
        ? "APPLIED"
        : counts.applying
          ? "APPLYING"
          : counts.disconnected
            ? "DISCONNECTED"
            : "PENDING";
  const rates = mine?.throughput;
  const edge = (key: "received" | "sent") => (
    <span className="arrow" data-testid={`edge-${role}-${key}`}>
      {rates && <span className="rate">{perSecond(rates[key])}</span>}→
    </span>
  );
  return (
    <div className="collector" data-testid={`collector-${role}`}>
      {edge("received")}
      <A to="/fleet">{role}</A>
      {worst ? <Badge tone={agentTone(worst)}>{counts!.total > 1 ? `${counts!.total} ${worst}` : worst}</Badge> : <Badge tone="off">none</Badge>}
      {edge("sent")}
      {rates && rates.failed > 0 && <Badge tone="bad">{perSecond(rates.failed)} dropped</Badge>}
    </div>
  );
}

export function OverviewPage() {
  // The collectors are read every 5 s: so is this page.
  const { data, error } = useQuery<Overview>(OVERVIEW, undefined, 5_000);
  if (!data) return <Page title="Overview"><Failure error={error} /></Page>;
  const rules = data.resources.filter((r) => r.kind === "InstrumentationRule");
  const actions = data.resources.filter((r) => r.kind === "Action" || r.kind === "Sampling");
  const destinations = data.destinations.map((d) => ({
    name: d.name,
    condition: d.health?.status === "False" ? d.health : d.condition,
    rate: d.throughput?.sent,
  }));
  // Sources, and the services that send without one (an SDK's), with what each sends.
  const sources: Item[] = [
    ...data.sources.map((s) => ({ name: s.name, condition: s.condition, rate: s.throughput })),
    ...data.services
      .filter((s) => !s.source)
      .map((s) => ({
        name: s.service || "(no service.name)",
        condition: { kind: "Ready", status: "True", reason: "SDK", message: "sends OTLP itself; no Source names it" } as Condition,
        rate: s.items,
      })),
  ];
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
        <Column title="Sources" to="/sources" items={sources} empty="Nothing instrumented by name yet; SDKs still send OTLP" />
        <Collector role="node" roles={data.roles} />
        <Column title="Actions" to="/actions" items={actions} empty="No action" />
        <Collector role="gateway" roles={data.roles} />
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
