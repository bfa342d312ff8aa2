// Sources, Actions, InstrumentationRules and Samplings: each with how it stands, its document,
// and create (from a JSON spec), disable and delete.

import { useContext, useState, type FormEvent } from "react";
import { createResource, deleteResource, setDisabled, type Condition, type Kind } from "../api";
import { ConditionBadge, Empty, Failure, Live, Page, toneOf, useChange, useQuery } from "../common";

interface Row {
  name: string;
  condition: Condition;
  yaml: string | null;
  detail?: string;
  disabled?: boolean;
}

const EXAMPLES: Record<string, unknown> = {
  SOURCE: { workload: { kind: "Process", name: "python3" } },
  ACTION: { signals: ["TRACES"], renameAttribute: { renames: { "user.id": "enduser.id" } } },
  INSTRUMENTATION_RULE: { headersCollection: { headerKeys: ["x-request-id"] } },
  SAMPLING: { disabled: false },
};

const PAGES: Record<string, { kind: Kind; title: string; noun: string; empty: string }> = {
  sources: { kind: "SOURCE", title: "Sources", noun: "source", empty: "A Source names what to instrument: a process by executable name here, a workload in a cluster." },
  actions: { kind: "ACTION", title: "Actions", noun: "action", empty: "Actions change telemetry on its way to destinations: rename or delete attributes, mask PII, name routes." },
  rules: { kind: "INSTRUMENTATION_RULE", title: "Instrumentation rules", noun: "rule", empty: "Instrumentation rules tune what agents record: headers, payloads, sampling of routes." },
  sampling: { kind: "SAMPLING", title: "Sampling", noun: "sampling", empty: "Sampling rules decide which traces the gateway keeps." },
};

const SOURCES = `{ sources { name workload disabled condition { kind status reason message } yaml
  processes { pid executable language runtimeVersion traced } } }`;
const OTHERS = `query($kind: Kind) { resources(kind: $kind) { kind name condition { kind status reason message } yaml } }`;

interface SourceRow {
  name: string;
  workload: string;
  disabled: boolean;
  condition: Condition;
  yaml: string | null;
  processes: { pid: number; executable: string; language: string | null; runtimeVersion: string | null; traced: boolean }[];
}

export function Resources({ page }: { page: keyof typeof PAGES }) {
  const { kind, title, noun, empty } = PAGES[page];
  const isSource = kind === "SOURCE";
  const sources = useQuery<{ sources: SourceRow[] }>(isSource ? SOURCES : "{ generation }");
  const others = useQuery<{ resources: Row[] }>(isSource ? "{ generation }" : OTHERS, { kind });
  const { refresh } = useContext(Live);
  const [creating, setCreating] = useState(false);
  const [open, setOpen] = useState<string>();
  const loaded = isSource ? sources.data : others.data;
  const rows: Row[] = isSource
    ? (sources.data?.sources ?? []).map((s) => ({
        name: s.name,
        condition: s.condition,
        yaml: s.yaml,
        disabled: s.disabled,
        detail: [
          s.workload,
          ...s.processes.map((p) => `pid ${p.pid} ${p.executable} (${[p.language ?? "unknown", p.runtimeVersion].filter(Boolean).join(" ")})`),
        ].join(" · "),
      }))
    : (others.data?.resources ?? []).map((r) => ({ ...r, disabled: r.condition.reason === "Disabled" }));
  const reload = () => {
    sources.reload();
    others.reload();
    refresh();
  };
  const [failure, act] = useChange(reload);
  return (
    <Page
      title={title}
      actions={
        <button className="primary" onClick={() => setCreating(true)}>
          Add {noun}
        </button>
      }
    >
      <Failure error={sources.error ?? others.error ?? failure} />
      {creating && (
        <SpecForm
          kind={kind}
          noun={noun}
          onDone={() => {
            setCreating(false);
            reload();
          }}
          onCancel={() => setCreating(false)}
        />
      )}
      {loaded && rows.length === 0 && !creating && (
        <Empty title={`No ${noun} yet`}>
          <p>{empty}</p>
          <button className="primary" onClick={() => setCreating(true)}>
            Add one
          </button>
        </Empty>
      )}
      <div className="table">
        {rows.map((r) => (
          <div key={r.name} className="resource" data-testid={`${noun}-row`}>
            <div className={`row resources ${toneOf(r.condition) === "bad" ? "failed" : ""}`}>
              <button className="link strong" onClick={() => setOpen(open === r.name ? undefined : r.name)} aria-expanded={open === r.name}>
                {r.name}
              </button>
              <span>
                <ConditionBadge condition={r.condition} />
              </span>
              <span className="ellipsis muted" title={r.condition.message}>
                {r.detail ? `${r.detail} — ` : ""}
                {r.condition.message}
              </span>
              <span className="row-actions">
                <button onClick={() => act(setDisabled(kind, r.name, !r.disabled))}>{r.disabled ? "Enable" : "Disable"}</button>
                <button className="danger" onClick={() => confirm(`Delete ${r.name}?`) && act(deleteResource(kind, r.name))}>
                  Delete
                </button>
              </span>
            </div>
            {open === r.name && <pre className="document">{r.yaml ?? "(no version in force)"}</pre>}
          </div>
        ))}
      </div>
    </Page>
  );
}

function SpecForm({ kind, noun, onDone, onCancel }: { kind: Kind; noun: string; onDone: () => void; onCancel: () => void }) {
  const [name, setName] = useState("");
  const [spec, setSpec] = useState(JSON.stringify(EXAMPLES[kind], null, 2));
  const [errors, setErrors] = useState<{ field: string | null; message: string }[]>([]);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    let parsed: unknown;
    try {
      parsed = JSON.parse(spec);
    } catch (error) {
      setErrors([{ field: "spec", message: `not JSON: ${error}` }]);
      return;
    }
    const result = await createResource(kind, name, parsed);
    if (result.ok) onDone();
    else setErrors(result.errors);
  };
  const nameError = errors.find((e) => e.field === "metadata.name");
  const specErrors = errors.filter((e) => e.field !== "metadata.name");
  return (
    <form className="panel form" onSubmit={submit} noValidate>
      <h2>Add {noun}</h2>
      <label className="field">
        <span>
          Name <i className="required">*</i>
        </span>
        <input value={name} onChange={(e) => setName(e.target.value)} aria-label="name" aria-invalid={!!nameError} />
        {nameError && <em className="field-error">{nameError.message}</em>}
      </label>
      <label className="field">
        <span>Spec (JSON, as under spec: in the YAML)</span>
        <textarea className="mono" rows={8} value={spec} onChange={(e) => setSpec(e.target.value)} aria-label="spec" aria-invalid={specErrors.length > 0} />
        {specErrors.map((e, i) => (
          <em key={i} className="field-error">
            {e.field ? `${e.field}: ` : ""}
            {e.message}
          </em>
        ))}
      </label>
      <div className="form-actions">
        <button type="submit" className="primary">
          Create
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
