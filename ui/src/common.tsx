// Pieces every page uses: the live data hook, navigation, status badges and bars.

import { createContext, useCallback, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { gql, Unauthorized, type ChangeResult, type Condition, type Link } from "./api";

/** What the shell shares: a counter that moves whenever the fleet changes, and the link state. */
export const Live = createContext<{ version: number; link: Link; refresh: () => void; signedOut: () => void }>({
  version: 0,
  link: "connecting",
  refresh: () => {},
  signedOut: () => {},
});

/**
 * Runs `query` now and again whenever the fleet changes (or every `every` ms). Keeps showing
 * the last data while a new answer is on its way, so nothing jumps.
 */
export function useQuery<T>(query: string, variables?: Record<string, unknown>, every = 10_000) {
  const { version, signedOut } = useContext(Live);
  const [data, setData] = useState<T | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [tick, setTick] = useState(0);
  const key = JSON.stringify(variables ?? {});
  const latest = useRef(0);
  useEffect(() => {
    const asked = ++latest.current;
    gql<T>(query, variables)
      .then((d) => {
        if (asked !== latest.current) return;
        setData(d);
        setError(undefined);
      })
      .catch((e) => {
        if (e instanceof Unauthorized) signedOut();
        else if (asked === latest.current) setError(String(e.message ?? e));
      });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [query, key, version, tick]);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), every);
    return () => clearInterval(timer);
  }, [every]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, reload };
}

/**
 * A row's change (disable, delete): what went wrong, if it was refused, and a way to make one,
 * after which `reload` runs either way.
 */
export function useChange(reload: () => void, made?: () => void): [string | undefined, (change: Promise<ChangeResult>) => Promise<void>] {
  const [failure, setFailure] = useState<string>();
  const act = async (change: Promise<ChangeResult>) => {
    const result = await change;
    setFailure(result.ok ? undefined : result.errors.map((e) => e.message).join("; "));
    if (result.ok) made?.();
    reload();
  };
  return [failure, act];
}

interface Progress {
  target: string;
  agents: number;
  applied: number;
  failed: number;
}

/** After a change: each role's rollout as it lands, with a way to the Rollouts page. */
export function RolloutProgress({ onClose }: { onClose: () => void }) {
  const { data } = useQuery<{ rollouts: Progress[] }>("{ rollouts { target agents applied failed } }", undefined, 2_000);
  const rollouts = (data?.rollouts ?? []).filter((r) => r.agents > 0);
  const failed = rollouts.some((r) => r.failed > 0);
  const done = rollouts.every((r) => r.applied === r.agents);
  return (
    <div className={`panel rollout-progress ${failed ? "failed" : ""}`} data-testid="rollout-progress" role="status">
      <strong>{failed ? "The rollout failed" : done ? "Rolled out" : "Rolling out…"}</strong>
      {rollouts.map((r) => (
        <span key={r.target}>
          {r.target} {r.applied}/{r.agents}
          {r.failed > 0 && `, ${r.failed} failed`}
        </span>
      ))}
      <A to="/rollouts">See the rollout</A>
      <button className="link" onClick={onClose}>
        Dismiss
      </button>
    </div>
  );
}

/** The page's path, and a way to go elsewhere without reloading. */
export function usePath(): [string, (to: string) => void] {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const back = () => setPath(location.pathname);
    addEventListener("popstate", back);
    return () => removeEventListener("popstate", back);
  }, []);
  const go = useCallback((to: string) => {
    history.pushState(null, "", to);
    setPath(to);
    scrollTo(0, 0);
  }, []);
  return [path, go];
}

export const Navigate = createContext<(to: string) => void>(() => {});

export function A({ to, children, className }: { to: string; children: ReactNode; className?: string }) {
  const go = useContext(Navigate);
  return (
    <a
      href={to}
      className={className}
      onClick={(e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        go(to);
      }}
    >
      {children}
    </a>
  );
}

export type Tone = "good" | "busy" | "bad" | "off" | "idle";

/** How a condition reads at a glance. */
export function toneOf(condition?: Condition | null): Tone {
  if (!condition) return "idle";
  if (condition.status === "True") return "good";
  if (["Disabled", "NoSources", "Unused", "NotActive", "NoKubernetes"].includes(condition.reason)) return "off";
  if (["Applying", "Waiting", "NoAgents", "Pending", "NoReports", "RolloutRequired"].includes(condition.reason)) return "busy";
  return "bad";
}

const AGENT_TONES: Record<string, Tone> = {
  APPLIED: "good",
  APPLYING: "busy",
  PENDING: "busy",
  FAILED: "bad",
  DISCONNECTED: "off",
  UNASSIGNED: "idle",
};

export function agentTone(status: string): Tone {
  return AGENT_TONES[status] ?? "idle";
}

export function Badge({ tone, children }: { tone: Tone; children: ReactNode }) {
  return <span className={`badge ${tone}`}>{children}</span>;
}

export function ConditionBadge({ condition }: { condition?: Condition | null }) {
  if (!condition) return <Badge tone="idle">unknown</Badge>;
  return (
    <span title={condition.message}>
      <Badge tone={toneOf(condition)}>{condition.reason}</Badge>
    </span>
  );
}

/** A bar split into parts, each sized by its count. */
export function SplitBar({ parts, label }: { parts: { tone: Tone; count: number; name: string }[]; label: string }) {
  const total = parts.reduce((sum, p) => sum + p.count, 0);
  return (
    <div className="split" role="img" aria-label={label}>
      {total === 0 ? (
        <div className="part idle" style={{ flexGrow: 1 }} />
      ) : (
        parts
          .filter((p) => p.count > 0)
          .map((p) => (
            <div key={p.name} className={`part ${p.tone}`} style={{ flexGrow: p.count }} title={`${p.count} ${p.name}`} />
          ))
      )}
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <h3>{title}</h3>
      {children}
    </div>
  );
}

export function Failure({ error }: { error?: string }) {
  return error ? <div className="error-box" role="alert">{error}</div> : null;
}

export function Page({ title, actions, children }: { title: string; actions?: ReactNode; children: ReactNode }) {
  return (
    <section className="page">
      <header className="page-head">
        <h1>{title}</h1>
        <div className="actions">{actions}</div>
      </header>
      {children}
    </section>
  );
}

/** A line diff of two texts (longest common subsequence), for desired against effective. */
export function diffLines(left: string, right: string): { kind: "same" | "left" | "right"; text: string }[] {
  const a = left.split("\n");
  const b = right.split("\n");
  const n = a.length;
  const m = b.length;
  if (n * m > 4_000_000) {
    return [...a.map((text) => ({ kind: "left" as const, text })), ...b.map((text) => ({ kind: "right" as const, text }))];
  }
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: { kind: "same" | "left" | "right"; text: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ kind: "same", text: a[i] });
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push({ kind: "left", text: a[i++] });
    else out.push({ kind: "right", text: b[j++] });
  }
  while (i < n) out.push({ kind: "left", text: a[i++] });
  while (j < m) out.push({ kind: "right", text: b[j++] });
  return out;
}

export function short(hash?: string | null): string {
  return hash ? hash.slice(0, 12) : "—";
}
