// Every role's and workload's config: how many agents applied it, are applying it or failed,
// with the failing agents and their errors.

import { A, Badge, Empty, Failure, Page, SplitBar, short, useQuery } from "../common";

interface Rollout {
  target: string;
  hash: string;
  agents: number;
  applied: number;
  pending: number;
  failed: number;
  errors: { uid: string; error: string }[];
}

const ROLLOUTS = `{ generation rollouts { target hash agents applied pending failed errors { uid error } } }`;

export function Rollouts() {
  const { data, error } = useQuery<{ generation: number; rollouts: Rollout[] }>(ROLLOUTS);
  return (
    <Page title="Rollouts">
      <Failure error={error} />
      {data && <p className="muted">Desired state generation {data.generation}: each change to it is a rollout of these configs.</p>}
      {data && data.rollouts.length === 0 && <Empty title="Nothing to roll out yet" />}
      <div className="rollouts">
        {data?.rollouts.map((r) => (
          <div key={r.target} className={`panel rollout ${r.failed ? "failed" : ""}`} data-testid="rollout">
            <header>
              <h3>{r.target}</h3>
              <span className="mono muted">{short(r.hash)}</span>
              {r.agents === 0 ? (
                <Badge tone="off">no agents</Badge>
              ) : r.failed ? (
                <Badge tone="bad">failed</Badge>
              ) : r.applied === r.agents ? (
                <Badge tone="good">applied</Badge>
              ) : (
                <Badge tone="busy">rolling out</Badge>
              )}
            </header>
            <SplitBar
              label={`${r.target} rollout`}
              parts={[
                { name: "applied", tone: "good", count: r.applied },
                { name: "pending", tone: "busy", count: r.pending },
                { name: "failed", tone: "bad", count: r.failed },
              ]}
            />
            <p className="counts">
              <span data-testid="applied">{r.applied} applied</span> · <span>{r.pending} pending</span> · <span>{r.failed} failed</span> of {r.agents}
            </p>
            {r.agents === 0 && <p className="muted">No connected agent runs this config: it lands when one connects.</p>}
            {r.errors.map((e) => (
              <p key={e.uid} className="error-text">
                <A to={`/fleet/${e.uid}`}>{short(e.uid)}</A>: {e.error}
              </p>
            ))}
          </div>
        ))}
      </div>
    </Page>
  );
}
