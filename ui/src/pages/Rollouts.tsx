// Every role's and workload's config: how many agents applied it, are applying it or failed,
// with the failing agents and their errors, what change made it, and the rollouts before.

import { A, Badge, Empty, Failure, Page, SplitBar, short, useQuery } from "../common";

interface Rollout {
  target: string;
  hash: string;
  generation: number | null;
  at: string | null;
  changes: string[];
  superseded: boolean;
  agents: number;
  applied: number;
  pending: number;
  failed: number;
  errors: { uid: string; error: string }[];
}

const FIELDS = "target hash generation at changes superseded agents applied pending failed errors { uid error }";
const ROLLOUTS = `{ generation rollouts { ${FIELDS} } rolloutHistory(limit: 30) { ${FIELDS} } }`;

export function Rollouts() {
  const { data, error } = useQuery<{ generation: number; rollouts: Rollout[]; rolloutHistory: Rollout[] }>(ROLLOUTS);
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
            {r.generation != null && (
              <p className="muted small">
                Generation {r.generation}
                {r.at && ` at ${r.at}`}
                {r.changes.length > 0 && `: ${r.changes.join(", ")}`}
              </p>
            )}
            {r.agents === 0 && <p className="muted">No connected agent runs this config: it lands when one connects.</p>}
            {r.errors.map((e) => (
              <p key={e.uid} className="error-text">
                <A to={`/fleet/${e.uid}`}>{short(e.uid)}</A>: {e.error}
              </p>
            ))}
          </div>
        ))}
      </div>
      {data && data.rolloutHistory.length > 0 && (
        <>
          <h2>History</h2>
          <div className="table">
            <div className="row rollout-history head">
              <span>Generation</span>
              <span>Target</span>
              <span>Config</span>
              <span>Outcome</span>
              <span>What changed</span>
            </div>
            {data.rolloutHistory.map((r) => (
              <div key={`${r.generation}-${r.target}`} className={`row rollout-history ${r.failed ? "failed" : ""}`} data-testid="rollout-history">
                <span title={r.at ?? undefined}>{r.generation}</span>
                <span className="strong">{r.target}</span>
                <span className="mono muted">{short(r.hash)}</span>
                <span>
                  {r.superseded ? <Badge tone="off">superseded</Badge> : <Badge tone={r.failed ? "bad" : r.applied === r.agents && r.agents > 0 ? "good" : "busy"}>current</Badge>}{" "}
                  {r.applied} applied{r.failed > 0 && `, ${r.failed} failed`}
                </span>
                <span className="ellipsis muted" title={r.changes.join("\n")}>
                  {r.changes.join(", ") || "—"}
                </span>
              </div>
            ))}
          </div>
        </>
      )}
    </Page>
  );
}
