// Everything in the desired state that is refused, with where and why.

import { Empty, Failure, Page, useQuery } from "../common";

interface Problem {
  source: string;
  line: number | null;
  resource: string | null;
  field: string | null;
  message: string;
}

export function Problems() {
  const { data, error } = useQuery<{ problems: Problem[] }>(`{ problems { source line resource field message } }`);
  return (
    <Page title="Problems">
      <Failure error={error} />
      {data && data.problems.length === 0 && (
        <Empty title="No problems">
          <p>Every resource in the desired state is accepted.</p>
        </Empty>
      )}
      <div className="table">
        {data?.problems.map((p, i) => (
          <div key={i} className="row problems failed" data-testid="problem">
            <span className="mono">
              {p.source}
              {p.line ? `:${p.line}` : ""}
            </span>
            <span>{p.resource ?? "—"}</span>
            <span className="mono">{p.field ?? "—"}</span>
            <span className="error-text">{p.message}</span>
          </div>
        ))}
      </div>
    </Page>
  );
}
