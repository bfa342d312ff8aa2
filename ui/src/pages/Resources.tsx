// Sources, Actions, InstrumentationRules and Samplings: each with how it stands, its document,
// and create and edit (a form drawn from the kind's schema, or its spec as JSON), disable and
// delete.

import { useContext, useState, type FormEvent } from "react";
import { createResource, deleteResource, setDisabled, updateResource, type Condition, type FieldError, type Kind } from "../api";
import { ConditionBadge, Empty, Failure, Live, Page, RolloutProgress, toneOf, useChange, useQuery } from "../common";
import { SchemaForm, unclaimed, type Errors, type Schema } from "../SchemaForm";

type Spec = Record<string, unknown>;

interface Row {
  name: string;
  condition: Condition;
  yaml: string | null;
  spec: Spec | null;
  detail?: string;
  disabled?: boolean;
  /** For a Source in a cluster: whether its workload's running pods have the SDK environment. */
  rollout?: Condition | null;
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

const SOURCES = `{ sources { name workload disabled condition { kind status reason message }
  rollout { kind status reason message } yaml spec
  processes { pid executable language runtimeVersion traced } } }`;
const OTHERS = `query($kind: Kind) { resources(kind: $kind) { kind name condition { kind status reason message } yaml spec } }`;

interface SourceRow {
  name: string;
  workload: string;
  disabled: boolean;
  condition: Condition;
  rollout: Condition | null;
  yaml: string | null;
  spec: Spec | null;
  processes: { pid: number; executable: string; language: string | null; runtimeVersion: string | null; traced: boolean }[];
}

export function Resources({ page }: { page: keyof typeof PAGES }) {
  const { kind, title, noun, empty } = PAGES[page];
  const isSource = kind === "SOURCE";
  const sources = useQuery<{ sources: SourceRow[] }>(isSource ? SOURCES : "{ generation }");
  const others = useQuery<{ resources: Row[] }>(isSource ? "{ generation }" : OTHERS, { kind });
  const { refresh } = useContext(Live);
  const schema = useQuery<{ specSchema: Schema | null }>("query($kind: Kind!) { specSchema(kind: $kind) }", { kind }, 600_000);
  // A new one ("new"), or the one of this name being edited.
  const [editing, setEditing] = useState<Row | "new">();
  const creating = editing !== undefined;
  const [open, setOpen] = useState<string>();
  const loaded = isSource ? sources.data : others.data;
  const rows: Row[] = isSource
    ? (sources.data?.sources ?? []).map((s) => ({
        name: s.name,
        condition: s.condition,
        yaml: s.yaml,
        spec: s.spec,
        disabled: s.disabled,
        rollout: s.rollout,
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
  const [rolling, setRolling] = useState(false);
  const [failure, act] = useChange(reload, () => setRolling(true));
  return (
    <Page
      title={title}
      actions={
        <button className="primary" onClick={() => setEditing("new")}>
          Add {noun}
        </button>
      }
    >
      <Failure error={sources.error ?? others.error ?? failure} />
      {rolling && <RolloutProgress onClose={() => setRolling(false)} />}
      {editing && (
        <SpecForm
          key={editing === "new" ? "" : editing.name}
          kind={kind}
          noun={noun}
          schema={schema.data?.specSchema ?? undefined}
          existing={editing === "new" ? undefined : editing}
          onDone={() => {
            setEditing(undefined);
            setRolling(true);
            reload();
          }}
          onCancel={() => setEditing(undefined)}
        />
      )}
      {loaded && rows.length === 0 && !creating && (
        <Empty title={`No ${noun} yet`}>
          <p>{empty}</p>
          <button className="primary" onClick={() => setEditing("new")}>
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
                {r.rollout?.status === "False" && <ConditionBadge condition={r.rollout} />}
              </span>
              <span className="ellipsis muted" title={[r.condition.message, r.rollout?.message].filter(Boolean).join("; ")}>
                {r.detail ? `${r.detail} — ` : ""}
                {r.rollout?.status === "False" ? r.rollout.message : r.condition.message}
              </span>
              <span className="row-actions">
                <button onClick={() => setEditing(r)} disabled={!r.spec}>
                  Edit
                </button>
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

/** Server errors by field path; `metadata.name` is the name's. */
function byPath(errors: FieldError[]): Errors {
  const keyed: Errors = {};
  for (const { field, message } of errors) {
    const key = field ?? "";
    keyed[key] = keyed[key] ? `${keyed[key]}; ${message}` : message;
  }
  return keyed;
}

function SpecForm({
  kind,
  noun,
  schema,
  existing,
  onDone,
  onCancel,
}: {
  kind: Kind;
  noun: string;
  schema?: Schema;
  existing?: Row;
  onDone: () => void;
  onCancel: () => void;
}) {
  const [name, setName] = useState(existing ? existing.name.split("/").pop()! : "");
  const [spec, setSpec] = useState<Spec>((existing?.spec ?? EXAMPLES[kind]) as Spec);
  // The spec as JSON while it is edited as such; undefined while the form is shown.
  const [json, setJson] = useState<string>();
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    let parsed = spec;
    if (json !== undefined) {
      try {
        parsed = JSON.parse(json);
      } catch (error) {
        setErrors({ spec: `not JSON: ${error}` });
        return;
      }
    }
    setBusy(true);
    try {
      const result = existing ? await updateResource(kind, name, parsed) : await createResource(kind, name, parsed);
      if (result.ok) onDone();
      else setErrors(byPath(result.errors));
    } catch (error) {
      setErrors({ "": String(error) });
    } finally {
      setBusy(false);
    }
  };
  const { "metadata.name": nameError, ...specErrors } = errors;
  const asForm = schema && json === undefined;
  const leftOver = asForm ? unclaimed(schema, spec, specErrors) : Object.entries(specErrors).map(([f, m]) => (f ? `${f}: ${m}` : m));
  return (
    <form className="panel form" onSubmit={submit} noValidate>
      <h2>{existing ? `Edit ${existing.name}` : `Add ${noun}`}</h2>
      <label className="field">
        <span>
          Name <i className="required">*</i>
        </span>
        <input value={name} onChange={(e) => setName(e.target.value)} disabled={!!existing} aria-label="name" aria-invalid={!!nameError} />
        {nameError && <em className="field-error">{nameError}</em>}
      </label>
      {schema && (
        <div className="tabs" role="tablist">
          <button type="button" role="tab" aria-selected={asForm} onClick={() => json !== undefined && switchToForm()}>
            Form
          </button>
          <button type="button" role="tab" aria-selected={!asForm} onClick={() => setJson(JSON.stringify(spec, null, 2))}>
            JSON
          </button>
        </div>
      )}
      {asForm ? (
        <SchemaForm schema={schema} value={spec} onChange={setSpec} errors={specErrors} />
      ) : (
        <label className="field">
          <span>Spec (JSON, as under spec: in the YAML)</span>
          <textarea
            className="mono"
            rows={10}
            value={json ?? JSON.stringify(spec, null, 2)}
            onChange={(e) => setJson(e.target.value)}
            aria-label="spec"
            aria-invalid={leftOver.length > 0}
          />
        </label>
      )}
      {leftOver.length > 0 && (
        <div className="error-box" data-testid="form-errors">
          {leftOver.map((e, i) => (
            <div key={i}>{e}</div>
          ))}
        </div>
      )}
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy}>
          {existing ? "Save" : "Create"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );

  function switchToForm() {
    try {
      setSpec(JSON.parse(json!));
      setJson(undefined);
      setErrors({});
    } catch (error) {
      setErrors({ spec: `not JSON: ${error}` });
    }
  }
}
